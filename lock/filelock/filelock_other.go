//go:build !linux && !darwin

package filelock

import (
	"context"
	"errors"
	"runtime"
	"time"

	"github.com/joblock/joblock/lock"
)

// ErrUnsupported is returned by New on platforms without flock.
var ErrUnsupported = errors.New("filelock: the file engine needs flock and supports Linux and macOS only, not " + runtime.GOOS + "; use the Redis engine")

// Locker is the file engine; on this platform it cannot be created.
type Locker struct{}

var _ lock.Limiter = (*Locker)(nil)

// New returns ErrUnsupported on this platform.
func New(dir string, opts ...Option) (*Locker, error) { return nil, ErrUnsupported }

// Dir returns "".
func (l *Locker) Dir() string { return "" }

// Close does nothing.
func (l *Locker) Close() error { return nil }

// Obtain returns ErrUnsupported.
func (l *Locker) Obtain(context.Context, string, time.Duration) (lock.Lease, error) {
	return lock.Lease{}, ErrUnsupported
}

// Refresh returns ErrUnsupported.
func (l *Locker) Refresh(context.Context, lock.Lease, time.Duration) (lock.Lease, error) {
	return lock.Lease{}, ErrUnsupported
}

// Release returns ErrUnsupported.
func (l *Locker) Release(context.Context, lock.Lease) error { return ErrUnsupported }

// Inspect returns ErrUnsupported.
func (l *Locker) Inspect(context.Context, string) (lock.Record, bool, error) {
	return lock.Record{}, false, ErrUnsupported
}

// ObtainLimit returns ErrUnsupported.
func (l *Locker) ObtainLimit(context.Context, string, int, time.Duration) (lock.Lease, error) {
	return lock.Lease{}, ErrUnsupported
}

// InspectSlots returns ErrUnsupported.
func (l *Locker) InspectSlots(context.Context, string) ([]lock.Record, error) {
	return nil, ErrUnsupported
}

// Scan returns ErrUnsupported.
func (l *Locker) Scan(context.Context, func(lock.Record) bool) error { return ErrUnsupported }

// Cleanup returns ErrUnsupported.
func (l *Locker) Cleanup(context.Context) (int, error) { return 0, ErrUnsupported }
