package lock_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
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
}

func TestValidateTTL(t *testing.T) {
	tests := []struct {
		name    string
		give    time.Duration
		wantErr string // "" for a valid TTL
	}{
		{"minimum", lock.MinTTL, ""},
		{"maximum", lock.MaxTTL, ""},
		{"zero", 0, "0s, must be positive"},
		{"negative", -time.Second, "-1s, must be positive"},
		{"under a millisecond", 999 * time.Microsecond, "999µs is under the minimum of 1ms"},
		{"a nanosecond over the maximum", lock.MaxTTL + 1, "8760h0m0.000000001s is over the maximum of 8760h0m0s"},
		{"largest duration", math.MaxInt64, "is over the maximum of 8760h0m0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := lock.ValidateTTL(tt.give)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, lock.ErrInvalidTTL)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
}

func TestTTLFromSeconds(t *testing.T) {
	tests := []struct {
		name    string
		give    int64
		want    time.Duration
		wantErr string
	}{
		{"spec default", 30, 30 * time.Second, ""},
		{"maximum", 365 * 24 * 3600, lock.MaxTTL, ""},
		{"zero", 0, 0, "timeout must be a positive number of seconds, got 0"},
		{"negative", -5, 0, "got -5"},
		{"one over the maximum", 365*24*3600 + 1, 0, "timeout 31536001 s is over the maximum of 31536000 s"},
		// Each of these wrapped around when multiplied by time.Second: into
		// 290ms, 292 years and a negative duration.
		{"wraps to 290ms", 18446744074, 0, "timeout 18446744074 s is over the maximum of 31536000 s"},
		{"wraps to 292 years", 9223372036, 0, "timeout 9223372036 s is over the maximum of 31536000 s"},
		{"wraps negative", 9223372037, 0, "timeout 9223372037 s is over the maximum of 31536000 s"},
		{"largest int64", math.MaxInt64, 0, "is over the maximum of 31536000 s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := lock.TTLFromSeconds(tt.give)
			if tt.wantErr == "" {
				require.NoError(t, err)
				assert.Equal(t, tt.want, got)
				return
			}
			require.ErrorIs(t, err, lock.ErrInvalidTTL)
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.Zero(t, got)
		})
	}
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

func TestAcquireResultRoundsExpiryUp(t *testing.T) {
	tests := []struct {
		name string
		give time.Time
		want int64
	}{
		{"whole second", time.Unix(1700000000, 0), 1700000000},
		{"a millisecond past", time.UnixMilli(1700000000001), 1700000001},
		{"a nanosecond past", time.Unix(1700000000, 1), 1700000001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := lock.AcquireResult(lock.Lease{Token: "lock_a", ExpiresAt: tt.give}, nil)
			require.True(t, res.Locked)
			require.NotNil(t, res.ExpiresAt)
			assert.Equal(t, tt.want, *res.ExpiresAt)
		})
	}
}

func TestRequestTimeoutDecoding(t *testing.T) {
	tests := []struct {
		give    string
		want    int // 0: no timeout
		wantErr string
	}{
		{`{"key":"k","action":"acquire"}`, 0, ""},
		{`{"key":"k","action":"acquire","timeout":null}`, 0, ""},
		{`{"key":"k","action":"acquire","timeout":30}`, 30, ""},
		{`{"key":"k","action":"acquire","timeout":30.0}`, 30, ""},
		{`{"key":"k","action":"acquire","timeout":3e1}`, 30, ""},
		{`{"key":"k","action":"acquire","timeout":31536000}`, 31536000, ""},
		{`{"key":"k","action":"acquire","timeout":0}`, 0, "timeout must be a positive number of seconds, got 0"},
		{`{"key":"k","action":"acquire","timeout":-1e999}`, 0, "timeout must be a positive number of seconds, got -1e999"},
		{`{"key":"k","action":"acquire","timeout":1.5}`, 0, "timeout 1.5 is not a whole number of seconds"},
		{`{"key":"k","action":"acquire","timeout":"30"}`, 0, `timeout must be a number of seconds, got "30"`},
		{`{"key":"k","action":"acquire","timeout":true}`, 0, "timeout must be a number of seconds, got true"},
		{`{"key":"k","action":"acquire","timeout":18446744074}`, 0, "timeout 18446744074 s is over the maximum of 31536000 s"},
		{`{"key":"k","action":"acquire","timeout":9223372036}`, 0, "timeout 9223372036 s is over the maximum of 31536000 s"},
		{`{"key":"k","action":"acquire","timeout":9223372037}`, 0, "timeout 9223372037 s is over the maximum of 31536000 s"},
		{`{"key":"k","action":"acquire","timeout":99999999999999999999}`, 0, "timeout 99999999999999999999 s is over the maximum"},
		{`{"key":"k","action":"acquire","timeout":1e999}`, 0, "timeout 1e999 s is over the maximum"},
		{`{"key":"k","action":"acquire","timeout":3.1536001e7}`, 0, "timeout 3.1536001e7 s is over the maximum"},
	}
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			var req lock.Request
			err := json.Unmarshal([]byte(tt.give), &req)
			if tt.wantErr != "" {
				require.ErrorIs(t, err, lock.ErrInvalidTTL)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, "k", req.Key)
			assert.Equal(t, lock.ActionAcquire, req.Action)
			if tt.want == 0 {
				assert.Nil(t, req.Timeout)
				return
			}
			require.NotNil(t, req.Timeout)
			assert.Equal(t, tt.want, *req.Timeout)
		})
	}
}
