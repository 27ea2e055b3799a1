package filelock_test

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func denyWrites(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() == 0 {
		t.Skip("mode bits do not stop root")
	}
	require.NoError(t, os.Chmod(dir, 0o555))
	t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })
}
