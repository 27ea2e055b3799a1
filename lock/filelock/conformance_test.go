package filelock_test

import (
	"testing"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/joblock/joblock/lock/locktest"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if runChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

func newLocker(t *testing.T, dir string, opts ...filelock.Option) *filelock.Locker {
	t.Helper()
	l, err := filelock.New(dir, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	locktest.Run(t, func(t *testing.T) lock.Locker { return newLocker(t, dir) })
}

func TestConformanceLimitThree(t *testing.T) {
	dir := t.TempDir()
	locktest.Run(t, func(t *testing.T) lock.Locker { return newLocker(t, dir) }, locktest.WithLimit(3))
}
