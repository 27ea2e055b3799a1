package main_test

import (
	"regexp"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSchedulesFromConfiguration(t *testing.T) {
	srv := redistest.Start(t)
	env, _ := fileWorkerEnv(t, srv)
	env = append(env, "JOBLOCK_ROLE=scheduler",
		"JOBLOCK_SCHEDULES=cache-warmup=@every 1s; lock-cleanup=off; daily-cleanup=CRON_TZ=Asia/Tokyo 30 3 * * *")
	w := startWorker(t, env)
	log := w.startLog()
	assert.Contains(t, log, `msg="cron job off" job=lock-cleanup`)
	assert.Contains(t, log, `msg="cron job" job=cache-warmup spec="@every 1s"`)
	// 03:30 in Tokyo (UTC+9, no summer time) is 18:30 UTC.
	assert.Regexp(t, regexp.MustCompile(`msg="cron job" job=daily-cleanup spec="CRON_TZ=Asia/Tokyo 30 3 \* \* \*" next=\d{4}-\d\d-\d\dT18:30:00Z`), log)

	// The warm-up, every second instead of every minute, enqueues for the
	// workers (none runs here, so the tasks wait in the queue).
	in := asynq.NewInspector(asynq.RedisClientOpt{Addr: srv.Addr})
	defer in.Close()
	require.Eventually(t, func() bool {
		tasks, err := in.ListPendingTasks("default")
		return err == nil && len(tasks) >= 2
	}, 15*time.Second, 50*time.Millisecond, "no cache warm-up enqueued every second:\n%s", w.logs.String())
	tasks, err := in.ListPendingTasks("default")
	require.NoError(t, err)
	for _, ti := range tasks {
		assert.Equal(t, "cache:regenerate", ti.Type)
	}
	w.stop(t)
}

func TestSchedulesReadInUTCWhateverTheHostZone(t *testing.T) {
	srv := redistest.Start(t)
	env, _ := fileWorkerEnv(t, srv)
	env = append(env, "JOBLOCK_ROLE=scheduler", "JOBLOCK_SCHEDULES=daily-cleanup=30 3 * * *; lock-cleanup=off; cache-warmup=off")
	tests := []struct {
		name string
		env  []string
		args []string
		want string // the time of day of the next run, in UTC
	}{
		{"host in New York", []string{"TZ=America/New_York"}, nil, "03:30:00Z"},
		{"host in Tokyo", []string{"TZ=Asia/Tokyo"}, nil, "03:30:00Z"},
		{"host in UTC", []string{"TZ=UTC"}, nil, "03:30:00Z"},
		{"-schedule-tz", []string{"TZ=America/New_York"}, []string{"-schedule-tz", "Asia/Tokyo"}, "18:30:00Z"},
		{"the host's zone", []string{"TZ=Asia/Tokyo", "JOBLOCK_SCHEDULE_TZ=Local"}, nil, "18:30:00Z"},
	}
	next := regexp.MustCompile(`msg="cron job" job=daily-cleanup spec="30 3 \* \* \*" next=\d{4}-\d\d-\d\dT(\S+)`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := startWorker(t, append(append([]string(nil), env...), tt.env...), tt.args...)
			m := next.FindStringSubmatch(w.startLog())
			require.NotNil(t, m, w.startLog())
			assert.Equal(t, tt.want, m[1])
			w.stop(t)
		})
	}

	_, help, code := runWorker(t, nil, "-h")
	assert.Equal(t, 0, code)
	assert.Contains(t, help, "-schedule-tz ZONE")
	assert.Contains(t, help, "UTC by default, so that schedulers in every zone agree")
}
