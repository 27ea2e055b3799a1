package lock_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzProcessRequest decodes arbitrary bytes as a spec request and carries
// it out on a real file engine. What decodes is valid UTF-8 and holds only
// the request's fields, by their exact names; decoding is stable (what
// decodes encodes and decodes to itself), and every outcome is one of the
// spec's: a lock for at most MaxTTL, a release, or an error saying what was
// wrong. Every lock taken is released again, so none can be "already
// locked".
func FuzzProcessRequest(f *testing.F) {
	for _, seed := range []string{
		`{"key":"abc123","action":"acquire","timeout":30}`,
		`{"key":"abc123","action":"acquire"}`,
		`{"key":"abc123","action":"release"}`,
		`{"key":"abc123","action":"release","lock_id":"lock_x"}`,
		`{"key":"k","action":"acquire","timeout":18446744074}`,
		`{"key":"k","action":"acquire","timeout":9223372036}`,
		`{"key":"k","action":"acquire","timeout":9223372037}`,
		`{"key":"k","action":"acquire","timeout":3.1536e7}`,
		`{"key":"k","action":"acquire","timeout":-0.0}`,
		`{"key":"k","action":"acquire","timeout":"30"}`,
		`{"key":"a\nb","action":"acquire"}`,
		`{"key":"","action":"steal"}`,
		`{"KEY":"k","Action":"acquire","TIMEOUT":1}`,
		`[]`, `null`, `{}`, `{"key":1}`,
		"{\"key\":\"a\xffb\",\"action\":\"acquire\"}",
		"{\"key\":\"a\xfeb\",\"action\":\"acquire\"}",
		`{"key":"a\ufffdb","action":"acquire"}`,
		`{"key":"k","action":"acquire","ttl":300}`,
		`{"key":"k","action":"acquire","limit":2,"lock_id":null}`,
	} {
		f.Add([]byte(seed))
	}
	l, err := filelock.New(f.TempDir())
	require.NoError(f, err)
	f.Cleanup(func() { _ = l.Close() })
	m := lock.NewManager(l)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		var req lock.Request
		if json.Unmarshal(b, &req) != nil {
			return
		}
		require.True(t, utf8.Valid(b), "decoded %q", b)
		var fields map[string]any
		if json.Unmarshal(b, &fields) == nil {
			for name := range fields {
				assert.Contains(t, []string{"key", "action", "timeout", "lock_id", "limit"}, name, "decoded %q", b)
			}
		}
		enc, err := json.Marshal(req)
		require.NoError(t, err)
		var again lock.Request
		require.NoError(t, json.Unmarshal(enc, &again), "%s", enc)
		require.Equal(t, req, again)

		start := time.Now()
		res := m.Process(ctx, req)
		_, err = json.Marshal(res)
		require.NoError(t, err)
		assert.False(t, res.AlreadyLocked, "every lock is released, yet %q was already locked", req.Key)
		switch {
		case res.Locked:
			require.Equal(t, lock.ActionAcquire, req.Action)
			require.NotNil(t, res.LockID)
			require.NotNil(t, res.ExpiresAt)
			assert.Empty(t, res.Error)
			ttl := lock.DefaultTTL
			if req.Timeout != nil {
				ttl = time.Duration(*req.Timeout) * time.Second
			}
			assert.LessOrEqual(t, ttl, lock.MaxTTL)
			assert.GreaterOrEqual(t, *res.ExpiresAt, start.Add(ttl).Unix())
			assert.LessOrEqual(t, *res.ExpiresAt, time.Now().Add(ttl).Unix()+1)
			rel := m.Process(ctx, lock.Request{Key: req.Key, Action: lock.ActionRelease})
			require.NotNil(t, rel.Released)
			require.True(t, *rel.Released, "release of a lock just taken: %s", rel.Error)
		case res.Released != nil:
			assert.False(t, *res.Released, "nothing is held, yet %q was released", req.Key)
			assert.NotEmpty(t, res.Error)
		default:
			assert.NotEmpty(t, res.Error, "neither locked, held, released nor an error: %+v", res)
		}
	})
}
