// Command report runs joblock's benchmarks side by side with their peers and
// prints the README's performance tables, with the machine and the date.
// Every figure is the median of interleaved rounds, so a noisy neighbour
// slows every contender of a round alike.
//
//	cd bench && go run ./report            # all sections, 3 rounds each
//	cd bench && go run ./report -only redis,scale
//
// It needs a Redis (-redis, default REDIS_ADDR or 127.0.0.1:6379), where it
// writes under prefixes of its own and deletes nothing else.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

type options struct {
	redisAddr string
	rounds    int
	asynqRuns int // rounds of the asynq section
	tasks     int
	only      string
	profile   string
	raw       bool
}

func main() {
	var o options
	addr := os.Getenv("REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	flag.StringVar(&o.redisAddr, "redis", addr, "Redis address [REDIS_ADDR]")
	flag.IntVar(&o.rounds, "rounds", 3, "interleaved rounds per figure (the median is shown)")
	flag.IntVar(&o.asynqRuns, "asynq-rounds", 0, "rounds of the asynq section, whose runs move most from one to the next (default: -rounds)")
	flag.IntVar(&o.tasks, "tasks", 10000, "asynq tasks per measurement")
	flag.StringVar(&o.only, "only", "", "run only these sections, comma-separated: asynq, middleware, file, redis, scale, limits")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile to this file; the asynq runs are labelled setup=<name> (go tool pprof -tagfocus)")
	flag.BoolVar(&o.raw, "raw", false, "print every asynq run's rate and CPU per task, and every ratio, to stderr")
	flag.Parse()
	if o.asynqRuns <= 0 {
		o.asynqRuns = o.rounds
	}
	if o.profile != "" {
		f, err := os.Create(o.profile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(1)
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(o options) error {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: o.redisAddr, PoolSize: 256})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("no Redis at %s (start redis-server or set -redis): %w", o.redisAddr, err)
	}
	var only []string
	if o.only != "" {
		only = strings.Split(o.only, ",")
	}
	sections := []struct {
		name string
		run  func(context.Context, options, *redis.Client) error
	}{
		{"asynq", asynqSection},
		{"middleware", middlewareSection},
		{"file", fileSection},
		{"redis", redisSection},
		{"scale", scaleSection},
		{"limits", limitsSection},
	}
	known := map[string]bool{}
	for _, s := range sections {
		known[s.name] = true
	}
	for _, name := range only {
		if !known[name] {
			return fmt.Errorf("-only: no section %q", name)
		}
	}
	machine(os.Stdout, o)
	defer os.Remove(tmpfsParent) // only if empty: every setup removes its own directory
	for _, s := range sections {
		if only != nil && !slices.Contains(only, s.name) {
			continue
		}
		if err := s.run(ctx, o, rdb); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// machine prints what the figures were measured on.
func machine(w *os.File, o options) {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	kernel, _ := exec.Command("uname", "-sr").Output()
	redisVersion, _ := exec.Command("redis-server", "--version").Output()
	rounds, command := fmt.Sprintf("%d", o.rounds), fmt.Sprintf("-rounds %d", o.rounds)
	if o.asynqRuns != o.rounds {
		rounds += fmt.Sprintf(" (%d in the asynq section)", o.asynqRuns)
		command += fmt.Sprintf(" -asynq-rounds %d", o.asynqRuns)
	}
	fmt.Fprintf(w, "Measured %s on %s, %d CPUs (%s), %s, %s; Redis %s; medians of %s interleaved rounds.\n",
		time.Now().UTC().Format("2006-01-02"), runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), cpu,
		strings.TrimSpace(string(kernel)), runtime.Version(), redisField(string(redisVersion)), rounds)
	fmt.Fprintf(w, "Regenerate with `cd bench && go run ./report %s`.\n", command)
}

func redisField(v string) string {
	for _, f := range strings.Fields(v) {
		if s, ok := strings.CutPrefix(f, "v="); ok {
			return s
		}
	}
	return "(version unknown)"
}

// measurement is one contender's figures over the rounds.
type measurement struct {
	name   string
	values []float64
}

func (m *measurement) median() float64 {
	v := slices.Clone(m.values)
	sort.Float64s(v)
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}

// interleave runs each contender once per round, in turn, rounds times.
func interleave(rounds int, names []string, measure func(name string) (float64, error)) ([]*measurement, error) {
	ms := make([]*measurement, len(names))
	for i, n := range names {
		ms[i] = &measurement{name: n}
	}
	for r := range rounds {
		// Each round starts one place further along, so no setup is always
		// the one measured first (or right after a given other).
		for i := range ms {
			if _, err := ms[(i+r)%len(ms)].add(measure, r); err != nil {
				return nil, err
			}
		}
	}
	return ms, nil
}

// add measures m once, in round r, and keeps the value.
func (m *measurement) add(measure func(name string) (float64, error), r int) (float64, error) {
	v, err := measure(m.name)
	if err != nil {
		return 0, fmt.Errorf("%s, round %d: %w", m.name, r+1, err)
	}
	m.values = append(m.values, v)
	return v, nil
}

// bracket runs base before each contender and once more after the last,
// in each of rounds rounds, so that every run of a contender sits between
// two runs of base, one just before it and one just after. A contender's
// ratio in a round is its value over the mean of those two; ratios holds
// them, one measurement per contender, and ms every value, base's first.
// On a shared machine the speed drifts over a round by more than the
// differences measured; a ratio of runs taken side by side cancels most
// of that drift, where a ratio of medians taken minutes apart does not.
// Each round starts one contender further along, as in interleave.
func bracket(rounds int, base string, names []string, measure func(name string) (float64, error)) (ms, ratios []*measurement, err error) {
	ms = []*measurement{{name: base}}
	for _, n := range names {
		ms = append(ms, &measurement{name: n})
		ratios = append(ratios, &measurement{name: n})
	}
	for r := range rounds {
		before, err := ms[0].add(measure, r)
		if err != nil {
			return nil, nil, err
		}
		for i := range names {
			k := (i + r) % len(names)
			v, err := ms[k+1].add(measure, r)
			if err != nil {
				return nil, nil, err
			}
			after, err := ms[0].add(measure, r)
			if err != nil {
				return nil, nil, err
			}
			ratios[k].values = append(ratios[k].values, v/((before+after)/2))
			before = after
		}
	}
	return ms, ratios, nil
}

func table(header ...string) {
	fmt.Println()
	fmt.Println("| " + strings.Join(header, " | ") + " |")
	fmt.Println("|" + strings.Repeat("---|", len(header)))
}

func row(cells ...string) { fmt.Println("| " + strings.Join(cells, " | ") + " |") }

func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
