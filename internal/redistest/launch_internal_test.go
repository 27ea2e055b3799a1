package redistest

import (
	"context"
	"os/exec"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A port taken between its choice and the server's start (here by another
// redis-server, which also answers PING there) is recognised, and the
// server starts on the next port chosen.
func TestLaunchChoosesAgainWhenThePortWasTaken(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("needs redis-server")
	}
	other := Start(t)
	s := newServer(t)
	t.Cleanup(s.Stop)
	err := func() error {
		s.setPort(other.port)
		return s.launch()
	}()
	require.ErrorIs(t, err, errPortTaken, "the other server's answer is not taken for this one's")

	var picks []int
	s.launchFresh(t, func() {
		if len(picks) == 0 {
			s.setPort(other.port)
		} else {
			s.setPort(FreePort(t))
		}
		picks = append(picks, s.port)
	})
	require.Len(t, picks, 2)
	assert.NotEqual(t, other.port, s.port)
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	info, err := c.Info(context.Background(), "server").Result()
	require.NoError(t, err)
	assert.Contains(t, info, "process_id:")
	assert.NotContains(t, info, "tcp_port:"+other.Addr[len("127.0.0.1:"):]+"\r\n")
}
