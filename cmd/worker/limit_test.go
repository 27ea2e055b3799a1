package main_test

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	worker "github.com/joblock/joblock/cmd/worker"
	"github.com/joblock/joblock/internal/engine"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock/locktest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTenantImportCap: two worker processes of concurrency 10 and a
// burst of imports, 16 of one tenant and 8 of another. From the workers'
// own trace of each critical section: no tenant ever ran more than two
// imports at once, the busy tenant did run two at once, every import ran
// exactly once, and both workers took part.
func TestTenantImportCap(t *testing.T) {
	for _, eng := range []string{engine.File, engine.Redis} {
		t.Run(eng, func(t *testing.T) {
			t.Parallel()
			srv := redistest.New(t)
			srv.RequireReal(t, "the worker")
			traceDir := t.TempDir()
			env := []string{"JOBLOCK_REDIS_URL=redis://" + srv.Addr, "JOBLOCK_ENGINE=" + eng, "JOBLOCK_LOCK_DIR=" + t.TempDir(),
				"JOBLOCK_PREFIX=" + srv.Prefix, "JOBLOCK_ROLE=worker", envTrace + "=" + traceDir,
				"JOBLOCK_RESTART_GRACE=0"} // a Redis of the test's own: no holder predates it
			workers := []*workerProc{startWorker(t, env), startWorker(t, env)}

			client := asynq.NewClient(asynq.RedisClientOpt{Addr: srv.Addr})
			defer client.Close()
			tenants := map[string]int{"acme": 16, "globex": 8}
			enqueued := map[string]bool{}
			for tenant, n := range tenants {
				for i := range n {
					payload := fmt.Sprintf(`{"tenant_id":%q,"file":"upload-%d.csv"}`, tenant, i)
					info, err := client.Enqueue(asynq.NewTask(worker.TypeTenantImport, []byte(payload)), asynq.MaxRetry(3))
					require.NoError(t, err)
					enqueued[info.ID] = true
				}
			}
			tr := &trace{dir: traceDir}
			committed := func() map[string]int {
				c := map[string]int{}
				for _, f := range tr.lines(t) {
					if f[0] == "committed" {
						c[f[1]]++
					}
				}
				return c
			}
			require.Eventually(t, func() bool {
				done := 0
				for id := range committed() {
					// A task sent back runs as its copy, "<id>~resent-N".
					if enqueued[strings.Split(id, "~")[0]] {
						done++
					}
				}
				return done == len(enqueued)
			}, 2*time.Minute, 50*time.Millisecond, "imports did not all run")
			for _, w := range workers {
				require.NoError(t, w.cmd.Process.Signal(syscall.SIGTERM))
				require.NoError(t, w.cmd.Wait())
			}

			for id, n := range committed() {
				assert.Equal(t, 1, n, "import %s ran %d times", id, n)
			}
			ranBy := map[string]bool{}   // worker pids
			keyOf := map[string]string{} // tenant -> lock key
			for _, f := range tr.lines(t) {
				if f[0] == "start" {
					ranBy[f[len(f)-1]] = true
					for tenant := range tenants {
						if strings.HasSuffix(f[4], "import-"+tenant) {
							keyOf[tenant] = f[4]
						}
					}
				}
			}
			assert.Len(t, ranBy, 2, "both workers must have run imports")
			for tenant, n := range tenants {
				require.Contains(t, keyOf, tenant)
				raw, err := os.ReadFile(worker.KeyLog(traceDir, keyOf[tenant]))
				require.NoError(t, err)
				s, err := locktest.CheckHammerLogLimit(string(raw), 2)
				require.NoError(t, err, "tenant %s ran more than two imports at once", tenant)
				assert.Equal(t, n, s.Sections, tenant)
				assert.Equal(t, 2, s.MaxInside, "tenant %s never ran two imports at once", tenant)
			}
		})
	}
}
