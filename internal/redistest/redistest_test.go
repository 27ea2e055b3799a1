package redistest_test

import (
	"context"
	"testing"

	"github.com/joblock/joblock/internal/redistest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTLSServerRefusesPlainText(t *testing.T) {
	s := redistest.Start(t, redistest.WithTLS(), redistest.WithPassword("pw-1"))
	ctx := context.Background()
	require.NoError(t, s.Client(t).Set(ctx, s.Prefix+"k", "v", 0).Err(), "a client with the test's CA, certificate and password")
	plain := redis.NewClient(&redis.Options{Addr: s.Addr, Password: "pw-1", MaxRetries: -1})
	defer plain.Close()
	assert.Error(t, plain.Ping(ctx).Err(), "plain text on the TLS port")
	assert.Equal(t, "rediss://:pw-1@"+s.Addr+"/0", s.URL())
}

func TestSentinelFailover(t *testing.T) {
	s := redistest.StartSentinel(t, 1, redistest.WithPassword("pw-2"))
	ctx := context.Background()
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName, SentinelAddrs: s.Addrs, Password: s.Password})
	defer c.Close()
	require.NoError(t, c.Set(ctx, s.Prefix+"before", "1", 0).Err())
	old := s.Master(t)
	promoted := s.Failover(t)
	assert.NotEqual(t, old, promoted)
	assert.Equal(t, promoted, s.Master(t))
	require.Eventually(t, func() bool { return c.Set(ctx, s.Prefix+"after", "1", 0).Err() == nil }, 10e9, 50e6,
		"the failover client writes to the new master")
}
