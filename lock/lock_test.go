package lock_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestValidateKey(t *testing.T) {
	tests := []struct {
		give    string
		wantErr string
	}{
		{"cache:product-123", ""},
		{"https://example.com/a?b=c&d=é", ""},
		{strings.Repeat("k", lock.MaxKeyLen), ""},
		{"", "empty key"},
		{strings.Repeat("k", lock.MaxKeyLen+1), "bytes, the limit is"},
		{"a\tb", "control character"},
		{"a\u0085b", "control character"},
		{"a\xffb", "not valid UTF-8"},
	}
	for _, tt := range tests {
		err := lock.ValidateKey(tt.give)
		if tt.wantErr == "" {
			assert.NoError(t, err, "%q", tt.give)
			continue
		}
		require.ErrorIs(t, err, lock.ErrInvalidKey, "%q", tt.give)
		assert.Contains(t, err.Error(), tt.wantErr)
	}
	require.ErrorIs(t, lock.ValidateTTL(999*time.Microsecond), lock.ErrInvalidTTL)
	require.NoError(t, lock.ValidateTTL(time.Millisecond))
}

func TestErrorsMatch(t *testing.T) {
	held := fmt.Errorf("wrapped: %w", &lock.HeldError{Key: "k", Holder: "lock_a", TTL: 1500 * time.Millisecond})
	assert.ErrorIs(t, held, lock.ErrNotObtained)
	assert.NotErrorIs(t, held, lock.ErrNotHeld)
	assert.Contains(t, held.Error(), `"k" is held by lock_a for another 1.5s`)

	cause := errors.New("refresh failed")
	lost := &lock.LostError{Key: "k", Err: cause}
	assert.ErrorIs(t, lost, lock.ErrLost)
	assert.ErrorIs(t, lost, cause)
}

// flaky is an engine stand-in that a real one cannot be made into on cue:
// every Refresh fails with a transient error.
type flaky struct{ lock.Locker }

func (flaky) Refresh(context.Context, lock.Lease, time.Duration) (lock.Lease, error) {
	return lock.Lease{}, errors.New("connection reset")
}

func TestKeepAliveGivesUpWhenTheLeaseRunsOut(t *testing.T) {
	lease := lock.Lease{Key: "k", Token: "lock_a", ExpiresAt: time.Now().Add(200 * time.Millisecond)}
	ctx, stop := lock.KeepAlive(context.Background(), flaky{}, lease, 200*time.Millisecond)
	defer stop()
	select {
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("transient renewal failures past the lease's end must cancel the work")
	}
	require.ErrorIs(t, context.Cause(ctx), lock.ErrLost)
	assert.ErrorContains(t, context.Cause(ctx), "connection reset")
}

func TestKeepAliveStopsWithItsParent(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	lease := lock.Lease{Key: "k", Token: "lock_a", ExpiresAt: time.Now().Add(time.Minute)}
	ctx, stop := lock.KeepAlive(parent, flaky{}, lease, time.Minute)
	cancel()
	<-ctx.Done()
	assert.Equal(t, lease, stop(), "stop returns the last lease and does not hang")
	assert.NotErrorIs(t, context.Cause(ctx), lock.ErrLost)
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
