package main

import (
	"context"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/redistest"
)

// Under a speed that drifts steadily from run to run, bracket's ratios are
// the contenders' own factors; and every run of a contender has a run of
// the base on both sides.
func TestBracketCancelsDrift(t *testing.T) {
	factor := map[string]float64{"base": 1, "a": 0.9, "b": 0.8, "c": 1.1}
	var order []string
	measure := func(name string) (float64, error) {
		speed := 1000 - 10*float64(len(order)) // slower at every run
		order = append(order, name)
		return speed * factor[name], nil
	}
	const rounds = 3
	ms, ratios, err := bracket(rounds, "base", []string{"a", "b", "c"}, measure)
	if err != nil {
		t.Fatal(err)
	}
	if len(order) != rounds*7 {
		t.Fatalf("%d runs, want %d: %v", len(order), rounds*7, order)
	}
	for i, name := range order {
		if (i%7)%2 == 0 && name != "base" || (i%7)%2 == 1 && name == "base" {
			t.Fatalf("run %d is %s: %v", i, name, order)
		}
	}
	if order[1] != "a" || order[8] != "b" || order[15] != "c" {
		t.Errorf("rounds do not start one contender further along: %v", order)
	}
	for _, r := range ratios {
		if len(r.values) != rounds {
			t.Errorf("%s: %d ratios", r.name, len(r.values))
		}
		for _, v := range r.values {
			if d := v - factor[r.name]; d > 1e-9 || d < -1e-9 {
				t.Errorf("%s: ratio %v, want %v", r.name, v, factor[r.name])
			}
		}
	}
	if len(ms) != 4 || ms[0].name != "base" || len(ms[0].values) != rounds*4 || len(ms[1].values) != rounds {
		t.Errorf("measurements %+v", ms)
	}
}

func TestVerdict(t *testing.T) {
	for _, tt := range []struct {
		goal, got, floor float64
		want             string
	}{
		{0.90, 0.90, 0.80, "met"},
		{0.90, 0.95, 0.99, "met"},
		{0.90, 0.85, 0.89, "not met; out of reach here, its floor is below the goal"},
		{0.90, 0.85, 0.90, "not met, though its floor reaches the goal"},
		{0.90, 0.85, 0.97, "not met, though its floor reaches the goal"},
	} {
		if got := verdict(tt.goal, tt.got, tt.floor); got != tt.want {
			t.Errorf("verdict(goal %.2f, got %.2f, floor %.2f) = %q, want %q", tt.goal, tt.got, tt.floor, got, tt.want)
		}
	}
}

func TestVerdictComparesAsPrinted(t *testing.T) {
	// 0.8484 prints as 0.85: a floor shown at the goal reaches it.
	if got, want := verdict(0.85, 0.78, 0.8484), "not met, though its floor reaches the goal"; got != want {
		t.Errorf("verdict = %q, want %q", got, want)
	}
	if got, want := verdict(0.95, 0.9449, 0.99), "not met, though its floor reaches the goal"; got != want {
		t.Errorf("verdict = %q, want %q", got, want)
	}
	// 0.845 is stored just below itself and prints as 0.84: not met.
	if got, want := verdict(0.85, 0.845, 0.80), "not met; out of reach here, its floor is below the goal"; got != want {
		t.Errorf("verdict = %q, want %q", got, want)
	}
	if got, want := verdict(0.85, 0.80, 0.845), "not met; out of reach here, its floor is below the goal"; got != want {
		t.Errorf("verdict = %q, want %q", got, want)
	}
}

// The fenced floor must do what it stands for: refuse a held key, hand out
// a larger token each time, even when the key's counter was lost, and keep
// the lock and the counter for the times it is given.
func TestFencedObtain(t *testing.T) {
	srv := redistest.New(t)
	srv.RequireReal(t, "the fenced floor")
	c := srv.Client(t)
	ctx := context.Background()
	key := srv.Prefix + "{k}"
	keys := []string{key, key + ":fence"}
	t.Cleanup(func() { c.Del(context.Background(), keys...) })
	obtain := func(holder string) int64 {
		t.Helper()
		n, err := fencedObtain.Run(ctx, c, keys, holder, 10000, 60000).Int64()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// state checks the lock's holder and the counter's value, and that
	// each lasts as long as it was given (10s and 60s), no longer.
	state := func(holder string, counter int64) {
		t.Helper()
		if v, err := c.Get(ctx, key).Result(); err != nil || v != holder {
			t.Fatalf("lock holds %q (%v), want %q", v, err, holder)
		}
		if v, err := c.Get(ctx, key+":fence").Int64(); err != nil || v != counter {
			t.Fatalf("counter is %d (%v), want %d", v, err, counter)
		}
		for k, within := range map[string][2]time.Duration{key: {0, 10 * time.Second}, key + ":fence": {10 * time.Second, time.Minute}} {
			if ttl, err := c.PTTL(ctx, k).Result(); err != nil || ttl <= within[0] || ttl > within[1] {
				t.Fatalf("%s lasts %s (%v), want more than %s and at most %s", k, ttl, err, within[0], within[1])
			}
		}
	}
	first := obtain("a")
	if first <= 0 {
		t.Fatalf("first obtain returned %d, want a token", first)
	}
	state("a", first)
	if n := obtain("b"); n != 0 {
		t.Fatalf("obtain of a held key returned %d, want 0", n)
	}
	state("a", first)
	// A counter far ahead of the clock: the next token follows it.
	ahead := first + 1e12
	if err := c.Set(ctx, key+":fence", ahead, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := handRelease.Run(ctx, c, []string{key}, "a").Err(); err != nil {
		t.Fatal(err)
	}
	if n := obtain("c"); n != ahead+1 {
		t.Fatalf("obtain after the counter was at %d returned %d", ahead, n)
	}
	state("c", ahead+1)
	// The counter lost: the clock keeps the token above the first.
	if err := c.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	n := obtain("d")
	if n <= first {
		t.Fatalf("obtain after the counter was lost returned %d, not above %d", n, first)
	}
	state("d", n)
}
