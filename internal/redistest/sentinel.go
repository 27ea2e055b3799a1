package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sentinel is a master, one replica and Sentinels watching them, of the
// test's own.
type Sentinel struct {
	// MasterName is the name the Sentinels monitor the master under.
	MasterName string
	// Addrs are the Sentinels' addresses.
	Addrs []string
	// Password is the master's and replica's password ("" for none); the
	// Sentinels themselves have none.
	Password string
	// Prefix is a key prefix unique to this test.
	Prefix string

	nodes []*Server // the first master, then the replica
}

// StartSentinel starts a master, a replica of it and n Sentinels
// (redis-sentinel, or redis-server --sentinel), each node configured with
// opts, waits until the Sentinels know the replica, and stops them all when
// t ends. It skips the test without redis-server.
func StartSentinel(t testing.TB, n int, opts ...Option) *Sentinel {
	t.Helper()
	// A replica's first sync waits 5s by default for others to join it.
	noDelay := func(s *Server) { s.extend("--repl-diskless-sync-delay", "0") }
	master := Start(t, append(opts, noDelay)...)
	port := strconv.Itoa(master.port)
	replica := Start(t, append(opts, noDelay, func(s *Server) { s.extend("--replicaof", "127.0.0.1", port) })...)
	s := &Sentinel{MasterName: "joblocktest", Password: master.Password, Prefix: master.Prefix, nodes: []*Server{master, replica}}
	if err := waitInfo(replica, "master_link_status:up"); err != nil {
		t.Fatal(err)
	}
	bin, lead := "redis-sentinel", []string{}
	if _, err := exec.LookPath(bin); err != nil {
		bin, lead = "redis-server", []string{"--sentinel"} // the same program, in Sentinel mode
	}
	quorum := n/2 + 1
	for range n {
		sen := &Server{Kind: KindServer, bin: bin, dir: t.TempDir()}
		conf := filepath.Join(sen.dir, "sentinel.conf")
		sen.argsFor = func(int, string) []string { return append([]string{conf}, lead...) }
		sen.launchFresh(t, func() {
			sen.setPort(FreePort(t))
			lines := []string{
				"port " + strconv.Itoa(sen.port), "bind 127.0.0.1", "daemonize no", "dir " + sen.dir,
				"logfile " + filepath.Join(sen.dir, "redis.log"),
				fmt.Sprintf("sentinel monitor %s 127.0.0.1 %s %d", s.MasterName, port, quorum),
				fmt.Sprintf("sentinel down-after-milliseconds %s %s", s.MasterName, downAfter),
				fmt.Sprintf("sentinel failover-timeout %s 10000", s.MasterName),
			}
			if s.Password != "" {
				lines = append(lines, fmt.Sprintf("sentinel auth-pass %s %s", s.MasterName, s.Password))
			}
			if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		})
		t.Cleanup(sen.Stop)
		s.Addrs = append(s.Addrs, sen.Addr)
	}
	for _, a := range s.Addrs {
		if err := s.waitKnowsReplica(a, replica.Addr); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// downAfter is how long, in ms, the Sentinels wait before they take an
// unanswering master for down.
const downAfter = "2000"

// Master returns the master's address as the first Sentinel reports it.
func (s *Sentinel) Master(t testing.TB) string {
	t.Helper()
	addr, err := s.master(s.Addrs[0])
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func (s *Sentinel) master(sentinelAddr string) (string, error) {
	c := redis.NewSentinelClient(&redis.Options{Addr: sentinelAddr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hp, err := c.GetMasterAddrByName(ctx, s.MasterName).Result()
	if err != nil || len(hp) != 2 {
		return "", fmt.Errorf("redistest: sentinel %s: master of %s: %v %v", sentinelAddr, s.MasterName, hp, err)
	}
	return net.JoinHostPort(hp[0], hp[1]), nil
}

// RestartMaster kills the master and starts it again on the same port,
// empty unless the options gave it persistence (the replica then follows
// it into emptiness). The Sentinels are told to wait a minute before they
// take a master for down, so they do not fail over meanwhile.
func (s *Sentinel) RestartMaster(t testing.TB) {
	t.Helper()
	addr := s.Master(t)
	s.setDownAfter(t, "60000")
	defer s.setDownAfter(t, downAfter)
	for _, n := range s.nodes {
		if n.Addr == addr {
			n.Restart(t)
			return
		}
	}
	t.Fatalf("redistest: the master %s is none of the nodes started", addr)
}

// setDownAfter sets every Sentinel's down-after-milliseconds to ms.
func (s *Sentinel) setDownAfter(t testing.TB, ms string) {
	t.Helper()
	for _, a := range s.Addrs {
		c := redis.NewSentinelClient(&redis.Options{Addr: a})
		err := c.Set(context.Background(), s.MasterName, "down-after-milliseconds", ms).Err()
		_ = c.Close()
		if err != nil {
			t.Fatalf("redistest: sentinel %s: SENTINEL SET down-after-milliseconds %s: %v", a, ms, err)
		}
	}
}

// Failover makes the Sentinels promote the replica (SENTINEL FAILOVER),
// waits until every Sentinel reports it as the master, it says so itself
// and the old master has become its replica, and returns its address.
func (s *Sentinel) Failover(t testing.TB) string {
	t.Helper()
	old := s.Master(t)
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addrs[0]})
	defer c.Close()
	if err := c.Failover(context.Background(), s.MasterName).Err(); err != nil {
		t.Fatalf("redistest: SENTINEL FAILOVER: %v", err)
	}
	var promoted, demoted *Server
	for _, n := range s.nodes {
		if n.Addr == old {
			demoted = n
		} else {
			promoted = n
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range s.Addrs {
		for {
			if got, err := s.master(a); err == nil && got == promoted.Addr {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redistest: sentinel %s still does not report %s as master", a, promoted.Addr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if err := waitInfo(promoted, "role:master"); err != nil {
		t.Fatal(err)
	}
	// The Sentinels turn the old master into a replica at their next look
	// at it, up to 10s later; until then it would take writes that are then
	// lost. Do now what they would do.
	host, port, _ := net.SplitHostPort(promoted.Addr)
	dc := redis.NewClient(demoted.options())
	defer dc.Close()
	if err := dc.ReplicaOf(context.Background(), host, port).Err(); err != nil {
		t.Fatalf("redistest: REPLICAOF on the old master: %v", err)
	}
	if err := waitInfo(demoted, "role:slave"); err != nil {
		t.Fatal(err)
	}
	return promoted.Addr
}

// waitKnowsReplica waits until the Sentinel at addr lists the replica as
// a healthy replica of the master, so that a failover can choose it.
func (s *Sentinel) waitKnowsReplica(addr, replica string) error {
	c := redis.NewSentinelClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		reps, err := c.Replicas(ctx, s.MasterName).Result()
		cancel()
		for _, r := range reps {
			if net.JoinHostPort(r["ip"], r["port"]) == replica && r["flags"] == "slave" && r["master-link-status"] == "ok" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: sentinel %s does not know replica %s: %v %v", addr, replica, reps, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitInfo waits until the server's INFO replication contains want.
func waitInfo(s *Server, want string) error {
	c := redis.NewClient(s.options())
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := c.Info(ctx, "replication").Result()
		cancel()
		if err == nil && strings.Contains(info, want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: %s: INFO replication never showed %q: %v\n%s", s.Addr, want, err, info)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
