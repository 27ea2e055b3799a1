package redislock

import (
	"context"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// awkwardKeys are valid keys whose braces meet the Cluster hash tag's.
var awkwardKeys = []string{"plain", "}", "}abc", "}}{", "}{x}", "a}b", "{x}", "a{}b", "{", "}{", "{}", "x{y}z"}

func TestKeyNames(t *testing.T) {
	l := New(nil, WithPrefix("app:"))
	seen := map[string]string{}
	for _, key := range awkwardKeys {
		require.NoError(t, lock.ValidateKey(key))
		names := l.keys(key)
		assert.Equal(t, l.lockKey(key), names[0])
		assert.Equal(t, names[0]+":fence", names[1])
		assert.Equal(t, key, l.keyOf(names[0]), "the key read back from its name")
		assert.NotEmpty(t, hashTag(names[0]), "%q: an empty hash tag is hashed whole", names[0])
		assert.Equal(t, hashTag(names[0]), hashTag(names[1]), "%q: lock and counter in different slots", key)
		other, dup := seen[names[0]]
		assert.False(t, dup, "%q and %q share the name %q", key, other, names[0])
		seen[names[0]] = key
	}
}

// hashTag is what Redis Cluster hashes of a key name, "" for the whole
// name (cluster.c keyHashSlot).
func hashTag(name string) string {
	for i := 0; i < len(name); i++ {
		if name[i] == '{' {
			for j := i + 1; j < len(name); j++ {
				if name[j] == '}' {
					return name[i+1 : j]
				}
			}
			return ""
		}
	}
	return ""
}

func TestAwkwardKeysOnCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	c := cl.Client(t)
	l := New(c, WithRestartGrace(0))
	ctx := context.Background()
	for _, key := range awkwardKeys {
		t.Run(strconv.Quote(key), func(t *testing.T) {
			names := l.keys(key)
			lockSlot, err := c.ClusterKeySlot(ctx, names[0]).Result()
			require.NoError(t, err)
			fenceSlot, err := c.ClusterKeySlot(ctx, names[1]).Result()
			require.NoError(t, err)
			require.Equal(t, lockSlot, fenceSlot, "the server puts the lock and its counter in different slots")

			lease, err := l.Obtain(ctx, key, time.Minute)
			require.NoError(t, err)
			_, err = l.Refresh(ctx, lease, time.Minute)
			require.NoError(t, err)
			rec, ok, err := l.Inspect(ctx, key)
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, key, rec.Key)
			found := false
			require.NoError(t, l.Scan(ctx, func(r lock.Record) bool {
				found = found || r.Key == key && r.Token == lease.Token
				return true
			}))
			assert.True(t, found, "Scan names the key as it was given")
			require.NoError(t, l.Release(ctx, lease))
			_, ok, err = l.Inspect(ctx, key)
			require.NoError(t, err)
			assert.False(t, ok)
		})
	}
}

func TestForgedFenceCounter(t *testing.T) {
	srv := redistest.New(t)
	c := srv.Client(t)
	l := New(c, WithPrefix(srv.Prefix), WithRestartGrace(0))
	ctx := context.Background()
	tests := []struct {
		name    string
		counter int64
		wantErr string // "" for an obtain with a positive token
	}{
		{"negative", -5, ""},
		{"zero", 0, ""},
		{"largest integer", math.MaxInt64, "increment or decrement would overflow"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := "forged-" + tt.name
			require.NoError(t, c.Set(ctx, l.keys(key)[1], tt.counter, time.Minute).Err())
			lease, err := l.Obtain(ctx, key, time.Minute)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				assert.NotErrorIs(t, err, lock.ErrNotObtained)
				_, ok, err := l.Inspect(ctx, key)
				require.NoError(t, err)
				assert.False(t, ok, "a refused obtain takes nothing")
				return
			}
			require.NoError(t, err)
			assert.Greater(t, lease.Fence, uint64(1_000_000_000_000_000), "restarted at the server clock, never wrapped")
			assert.Less(t, lease.Fence, uint64(math.MaxInt64))
			require.NoError(t, l.Release(ctx, lease))
		})
	}
}

// TestPrefixWithBraces: a prefix holding a hash-tag brace is refused by
// every operation, with an error saying why, rather than working on one
// node and failing with CROSSSLOT on a Cluster.
func TestPrefixWithBraces(t *testing.T) {
	srv := redistest.New(t)
	l := New(srv.Client(t), WithPrefix(srv.Prefix+"{app}:"))
	ctx := context.Background()
	want := `redislock: prefix "` + srv.Prefix + `{app}:" holds '{' or '}'`
	_, err := l.Obtain(ctx, "k", time.Second)
	require.ErrorContains(t, err, want)
	_, err = l.ObtainLimit(ctx, "k", 2, time.Second)
	require.ErrorContains(t, err, want)
	_, _, err = l.Inspect(ctx, "k")
	require.ErrorContains(t, err, want)
	require.ErrorContains(t, l.Scan(ctx, func(lock.Record) bool { return true }), want)
	require.NoError(t, ValidatePrefix("app:"))
}
