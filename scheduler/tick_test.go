package scheduler_test

import (
	"testing"
	"time"

	"github.com/joblock/joblock/scheduler"
	"github.com/robfig/cron/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTickFromAnyTimeUntilTheNext: a host's cron fires when its own clock
// reads the tick, or later under load; every reading from the tick until
// just before the next one belongs to the tick.
func TestTickFromAnyTimeUntilTheNext(t *testing.T) {
	tests := []struct {
		name string
		spec string
		want time.Time
		give []time.Duration // after want
	}{
		{"every second", "@every 1s", at(t, "2026-11-25T10:00:07Z"), []time.Duration{0, 30 * time.Millisecond, 999 * time.Millisecond}},
		{"every minute", "* * * * *", at(t, "2026-11-25T10:01:00Z"), []time.Duration{0, 200 * time.Millisecond, 59 * time.Second}},
		{"daily", "0 3 * * *", at(t, "2026-11-26T03:00:00Z"), []time.Duration{0, 4 * time.Second, 23 * time.Hour}},
		{"yearly", "0 0 1 1 *", at(t, "2026-01-01T00:00:00Z"), []time.Duration{0, 300 * 24 * time.Hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sched, err := cron.ParseStandard(tt.spec)
			require.NoError(t, err)
			for _, late := range tt.give {
				assert.Equal(t, tt.want, scheduler.Tick(sched, tt.want.Add(late), time.UTC).UTC(), "%s late", late)
			}
			next := scheduler.Aligned(sched).Next(tt.want)
			assert.Equal(t, next, scheduler.Tick(sched, next, time.UTC).UTC(), "the next tick is its own")
		})
	}
}

func TestTickSeparatesNeighbours(t *testing.T) {
	sched, err := cron.ParseStandard("@every 1s")
	require.NoError(t, err)
	base := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	seen := map[time.Time]bool{}
	for i := range 10 {
		seen[scheduler.Tick(sched, base.Add(time.Duration(i)*time.Second+20*time.Millisecond), time.UTC)] = true
	}
	assert.Len(t, seen, 10, "consecutive ticks must get distinct keys")
}

func TestTickWithoutActivation(t *testing.T) {
	sched, err := cron.ParseStandard("0 0 30 2 *") // February 30th
	require.NoError(t, err)
	assert.True(t, scheduler.Tick(sched, time.Now(), time.UTC).IsZero())
}
