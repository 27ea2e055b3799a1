package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cluster is a Redis Cluster of the test's own.
type Cluster struct {
	Addrs []string
	nodes []*Server
}

// StartCluster starts masters cluster-enabled redis-servers, joins them
// with redis-cli --cluster create (no replicas), waits for cluster_state:ok
// and stops them when t ends. It skips the test without redis-server or
// redis-cli, and fails it instead when JOBLOCK_TEST_REDIS is "server".
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	if _, err := exec.LookPath("redis-cli"); err != nil {
		if os.Getenv("JOBLOCK_TEST_REDIS") == "server" {
			t.Fatal("redistest: JOBLOCK_TEST_REDIS=server but no redis-cli on PATH")
		}
		t.Skip("redistest: a Redis Cluster needs real redis-server and redis-cli (miniredis cannot stand in) and redis-cli is not on PATH: install redis-tools")
	}
	c := &Cluster{}
	for range masters {
		s := newServer(t)
		var bus int // the default, port+10000, may be taken or out of range
		s.argsFor = func(port int, dir string) []string {
			return append(serverArgs(port, dir), "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(bus),
				"--cluster-config-file", "nodes-"+strconv.Itoa(port)+".conf", "--cluster-node-timeout", "5000")
		}
		s.launchFresh(t, func() {
			s.setPort(FreePort(t))
			bus = FreePort(t)
			for bus == s.port {
				bus = FreePort(t)
			}
		})
		t.Cleanup(s.Stop)
		c.nodes = append(c.nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	if err := c.waitOK(); err != nil {
		t.Fatal(err)
	}
	return c
}

// Restart kills the i-th master and starts it again on the same port and
// directory, waiting until the cluster is ok again. Its nodes file keeps
// its identity and hash slots; its data is gone, as after a crash without
// persistence.
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	c.nodes[i].Restart(t)
	if err := c.waitOK(); err != nil {
		t.Fatal(err)
	}
}

func (c *Cluster) waitOK() error {
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range c.Addrs {
		cl := redis.NewClient(&redis.Options{Addr: addr})
		for {
			info, err := cl.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				_ = cl.Close()
				return fmt.Errorf("redistest: cluster node %s not ok: %v %s", addr, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = cl.Close()
	}
	return nil
}

// Client returns a cluster client, closed when t ends.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs})
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}
