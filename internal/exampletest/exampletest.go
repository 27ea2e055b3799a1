// Package exampletest runs the programs in examples/ inside their own
// tests, so nothing is compiled while a test runs.
package exampletest

import (
	"io"
	"os"
	"regexp"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// Output runs main, an example's main function, and returns what it wrote
// to standard output. It must not run in parallel with other tests that
// write there.
func Output(t *testing.T, main func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	require.NoError(t, err)
	stdout := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		done <- b
	}()
	defer func() { os.Stdout = stdout }()
	main()
	require.NoError(t, w.Close())
	out := string(<-done)
	t.Log(out)
	return out
}

// Number returns the number that pattern's first group matches in out.
func Number(t *testing.T, out, pattern string) int {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(out)
	require.NotNil(t, m, "%q not in %q", pattern, out)
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	return n
}
