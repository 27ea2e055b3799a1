package scheduler_test

import (
	"testing"
	"time"

	"github.com/joblock/joblock/scheduler"
	"github.com/robfig/cron/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTickAgreesAcrossSkewedClocks(t *testing.T) {
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		require.NoError(t, err)
		return v
	}
	tests := []struct {
		name string
		spec string
		skew time.Duration
		want time.Time
		give []time.Duration // clock offsets of hosts that all fire for want
	}{
		{"every second", "@every 1s", 5 * time.Second, at("2026-11-25T10:00:07Z"),
			[]time.Duration{-450 * time.Millisecond, -100 * time.Millisecond, 0, 30 * time.Millisecond, 400 * time.Millisecond}},
		{"every minute", "* * * * *", 5 * time.Second, at("2026-11-25T10:01:00Z"),
			[]time.Duration{-4 * time.Second, 0, 200 * time.Millisecond, 4900 * time.Millisecond}},
		{"daily", "0 3 * * *", 5 * time.Second, at("2026-11-26T03:00:00Z"),
			[]time.Duration{-4 * time.Second, 0, 4 * time.Second}},
		{"skew wider than half the period is capped", "@every 10s", time.Minute, at("2026-11-25T10:00:10Z"),
			[]time.Duration{-4 * time.Second, 0, 4 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sched, err := cron.ParseStandard(tt.spec)
			require.NoError(t, err)
			for _, off := range tt.give {
				got := scheduler.Tick(sched, tt.want.Add(off), tt.skew)
				assert.Equal(t, tt.want, got.UTC(), "host off by %s", off)
			}
		})
	}
}

func TestTickSeparatesNeighbours(t *testing.T) {
	sched, err := cron.ParseStandard("@every 1s")
	require.NoError(t, err)
	base := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	seen := map[time.Time]bool{}
	for i := range 10 {
		seen[scheduler.Tick(sched, base.Add(time.Duration(i)*time.Second+20*time.Millisecond), scheduler.DefaultSkew)] = true
	}
	assert.Len(t, seen, 10, "consecutive ticks must get distinct keys")
}
