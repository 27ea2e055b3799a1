package main

import (
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSchedulesSet(t *testing.T) {
	tests := []struct {
		give    string
		want    schedules // changes from the defaults
		wantErr string
	}{
		{give: "", want: schedules{}},
		{give: "daily-cleanup=30 3 * * *", want: schedules{jobDailyCleanup: "30 3 * * *"}},
		{give: " daily-cleanup = CRON_TZ=Europe/Berlin 30 3 * * * ; cache-warmup=off;", want: schedules{
			jobDailyCleanup: "CRON_TZ=Europe/Berlin 30 3 * * *", jobCacheWarmup: scheduleOff}},
		{give: "lock-cleanup=@every 30s;lock-cleanup=@hourly", want: schedules{jobLockCleanup: "@hourly"}},
		{give: "cache-warmup", wantErr: `schedule "cache-warmup": want NAME=SPEC`},
		{give: "nightly=@daily", wantErr: "NAME one of cache-warmup, daily-cleanup, lock-cleanup"},
		{give: "daily-cleanup=0 3 * *", wantErr: `schedule of daily-cleanup: "0 3 * *": expected exactly 5 fields`},
		{give: "daily-cleanup=CRON_TZ=Nowhere/Land 0 3 * * *", wantErr: "provided bad location Nowhere/Land"},
		{give: "daily-cleanup=CRON_TZ=Europe/Berlin", wantErr: `schedule of daily-cleanup: "CRON_TZ=Europe/Berlin": no schedule after CRON_TZ=Europe/Berlin`},
		{give: "daily-cleanup=CRON_TZ= 0 3 * * *", wantErr: "CRON_TZ= names no time zone"},
		{give: "daily-cleanup=0 0 31 4 *", wantErr: `schedule of daily-cleanup: "0 0 31 4 *": it never fires`},
		{give: "daily-cleanup=CRON_TZ=Local 0 3 * * *", want: schedules{jobDailyCleanup: "CRON_TZ=Local 0 3 * * *"}},
		{give: "cache-warmup=@every 1s", want: schedules{jobCacheWarmup: "@every 1s"}},
		{give: "cache-warmup=CRON_TZ=Asia/Tokyo @every 2m", want: schedules{jobCacheWarmup: "CRON_TZ=Asia/Tokyo @every 2m"}},
		{give: "daily-cleanup=@every 0s", wantErr: `schedule of daily-cleanup: "@every 0s": the interval must be whole seconds, at least 1s`},
		{give: "daily-cleanup=@every -1m", wantErr: `schedule of daily-cleanup: "@every -1m": the interval must be whole seconds, at least 1s`},
		{give: "daily-cleanup=@every 1ms", wantErr: `schedule of daily-cleanup: "@every 1ms": the interval must be whole seconds, at least 1s`},
		{give: "daily-cleanup=@every 1500ms", wantErr: `schedule of daily-cleanup: "@every 1500ms": the interval must be whole seconds, at least 1s`},
		{give: "daily-cleanup=TZ=UTC @every 999ms", wantErr: `schedule of daily-cleanup: "TZ=UTC @every 999ms": the interval must be whole seconds, at least 1s`},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			got := defaultSchedules()
			err := got.set(tt.give)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			want := defaultSchedules()
			for k, v := range tt.want {
				want[k] = v
			}
			assert.Equal(t, want, got)
		})
	}
}

func TestScheduleFlagOverridesEnvironment(t *testing.T) {
	t.Setenv("JOBLOCK_SCHEDULES", "cache-warmup=@every 10s; daily-cleanup=0 4 * * *")
	cfg, err := parseFlags([]string{"-schedule", "cache-warmup=off", "-schedule", "lock-cleanup=@every 1m"}, io.Discard)
	require.NoError(t, err)
	assert.Equal(t, schedules{jobCacheWarmup: scheduleOff, jobDailyCleanup: "0 4 * * *", jobLockCleanup: "@every 1m"}, cfg.schedules)
}
