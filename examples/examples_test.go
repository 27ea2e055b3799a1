// Package examples holds one runnable program per use case of the
// LockManager spec; this test runs each one.
package examples

import (
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runExample(t *testing.T, dir string) string {
	t.Helper()
	out, err := exec.Command("go", "run", "./"+dir).CombinedOutput()
	require.NoError(t, err, string(out))
	return string(out)
}

func number(t *testing.T, out, pattern string) int {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(out)
	require.NotNil(t, m, "%q not in %q", pattern, out)
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}

func TestExamples(t *testing.T) {
	t.Run("cache-regeneration", func(t *testing.T) {
		out := runExample(t, "cache-regeneration")
		assert.Equal(t, 1, number(t, out, `regenerated (\d+) time`))
		assert.Equal(t, 4, number(t, out, `(\d+) request\(s\) served the stale cache`))
	})
	t.Run("cdn-invalidation", func(t *testing.T) {
		assert.Equal(t, 1, number(t, runExample(t, "cdn-invalidation"), `CDN purged (\d+) time`))
	})
	t.Run("job-dedup", func(t *testing.T) {
		assert.Equal(t, 1, number(t, runExample(t, "job-dedup"), `processed (\d+) time`))
	})
	t.Run("distributed-cron", func(t *testing.T) {
		out := runExample(t, "distributed-cron")
		assert.GreaterOrEqual(t, number(t, out, `(\d+) ticks`), 2)
		assert.Equal(t, 0, number(t, out, `(\d+) run on both servers`))
	})
	t.Run("rate-limit", func(t *testing.T) {
		out := runExample(t, "rate-limit")
		made := number(t, out, `(\d+) calls made`)
		refused := number(t, out, `(\d+) refused`)
		assert.Equal(t, 5, made+refused)
		assert.LessOrEqual(t, made, 3, "one slot per second over a 2s wait")
		assert.Positive(t, refused)
		if made > 1 {
			assert.GreaterOrEqual(t, number(t, out, `closest two (\d+) ms apart`), 950)
		}
	})
	t.Run("export-prevention", func(t *testing.T) {
		out := runExample(t, "export-prevention")
		assert.Contains(t, out, "second export: export already running")
		assert.Contains(t, out, "first export: <nil>")
		assert.Contains(t, out, "export after it finished: <nil>")
	})
}
