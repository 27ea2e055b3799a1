package redislock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/redis/go-redis/v9"
)

// DefaultRestartGrace is the restart grace when WithRestartGrace is not
// given: lock.DefaultLease, the lease of work run under lock.Renewer by
// default.
const DefaultRestartGrace = lock.DefaultLease

// WithRestartGrace sets how long after a Redis node started the Locker
// grants no new lock (nor slot) on a key that lives on that node; 0
// disables it. Default DefaultRestartGrace. It is rounded up to whole
// seconds, the resolution of the node's uptime, and may last up to a second
// longer.
//
// A restart (or a start: a brand-new Redis looks the same) can have lost
// locks whose holders still work, and they learn it at their next renewal
// or, when renewals fail, a safety margin before their lease runs out. A
// grace at least as long as the longest lease any holder on the node uses
// keeps new holders out until then: set it longer when leases are longer,
// and to 0 only where a key's runs may overlap after a restart.
func WithRestartGrace(d time.Duration) Option {
	return func(l *Locker) { l.grace = max(d, 0) }
}

// An obtain script of a Locker with a grace is gated by Redis's script
// cache, which a restarted node starts without (Redis 7 and later neither
// persist nor replicate it): the Locker sends it by hash only, and when a
// node does not know the hash (NOSCRIPT), loads it there itself, on one
// connection, after INFO on that connection said the node has been up for
// the grace. So a node has the script only while it runs the incarnation
// whose uptime was checked, and Obtain costs what it costs without a grace:
// one EVALSHA. The grace is in the script's text, so Lockers with another
// grace have scripts of their own and check for themselves.

// script is an obtain script.
type script struct {
	*redis.Script
	src string
	// gated: never sent whole (EVAL); loaded only through admit.
	gated bool
}

// obtainScripts returns the Locker's obtain scripts for its grace and
// client.
func (l *Locker) obtainScripts() (obtain, obtainSlot script) {
	if l.grace <= 0 {
		return script{Script: obtainScript, src: obtainSrc}, script{Script: obtainSlotScript, src: obtainSlotSrc}
	}
	secs := l.graceSeconds()
	if !canAdmit(l.client) {
		// No way to reach the node a key lives on with a connection of
		// its own: every obtain checks the uptime itself, inside its
		// script.
		return checking(obtainSrc, secs), checking(obtainSlotSrc, secs)
	}
	return gated(obtainSrc, secs), gated(obtainSlotSrc, secs)
}

func (l *Locker) graceSeconds() int64 { return int64((l.grace + time.Second - 1) / time.Second) }

// Redis counts uptime as the difference of two clock readings in whole
// seconds, so an uptime of n seconds may be as little as n-1 seconds and a
// bit: the grace is over only at an uptime above it.

// graceOver says whether a node up for up seconds, as INFO counts them,
// has been up for the grace.
func (l *Locker) graceOver(up int64) bool { return up > l.graceSeconds() }

func gated(src string, secs int64) script {
	src = "-- Loaded only on a node up for at least " + strconv.FormatInt(secs, 10) + "s (the restart grace).\n" + src
	return script{Script: redis.NewScript(src), src: src, gated: true}
}

// checkUptime refuses, with the node's uptime, while it is under the
// grace; it goes in front of an obtain script.
const checkUptime = `-- Refuses while the node has been up for less than the restart grace
-- (an uptime in whole seconds above it: see graceOver).
local up = tonumber(string.match(redis.call('INFO', 'server'), 'uptime_in_seconds:(%%d+)'))
if up <= %d then
  return {up}
end
`

func checking(src string, secs int64) script {
	src = fmt.Sprintf(checkUptime, secs) + src
	return script{Script: redis.NewScript(src), src: src}
}

// maxAdmits bounds how often one obtain loads its script: a node that
// forgets it again at once is restarting over and over.
const maxAdmits = 3

// obtainRun runs an obtain script s for key, through the gate when s is
// gated. A refusal by the grace is a *lock.HeldError.
func (l *Locker) obtainRun(ctx context.Context, s script, key string, keys []string, args ...any) (any, error) {
	if !s.gated {
		return l.run(ctx, s.Script, keys, args...).Result()
	}
	for range maxAdmits {
		res, err := l.exec(ctx, s.Script, false, keys, args...).Result()
		if err == nil || !redis.HasErrorPrefix(err, "NOSCRIPT") { // nil first: HasErrorPrefix allocates
			return res, err
		}
		if err := l.admit(ctx, s, key, keys[0]); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("the node forgot the obtain script %d times in a row (NOSCRIPT): is it restarting over and over?", maxAdmits)
}

// admit loads s on the node that holds routeKey if that node has been up
// for the grace, and otherwise returns the grace's *lock.HeldError. INFO
// and SCRIPT LOAD go over one connection, so both reach the same run of
// the node: one that restarted in between breaks the connection instead.
func (l *Locker) admit(ctx context.Context, s script, key, routeKey string) error {
	cn, err := nodeConn(ctx, l.client, routeKey)
	if err != nil {
		return err
	}
	defer cn.Close()
	info, err := cn.Info(ctx, "server").Result()
	if err != nil {
		return fmt.Errorf("the restart grace needs INFO (or WithRestartGrace(0)): %w", err)
	}
	up, ok := uptime(info)
	if !ok {
		return errors.New("the restart grace needs uptime_in_seconds from INFO server, and it is not there")
	}
	if !l.graceOver(up) {
		return l.graceError(key, up)
	}
	if err := cn.ScriptLoad(ctx, s.src).Err(); err != nil {
		return fmt.Errorf("the restart grace needs SCRIPT LOAD (or WithRestartGrace(0)): %w", err)
	}
	return nil
}

// cluster is what a Cluster client offers to reach the primary of a key.
type cluster interface {
	MasterForKey(ctx context.Context, key string) (*redis.Client, error)
}

// single is what a client of one node (or of a Sentinel's primary) offers
// to take a connection of its own.
type single interface{ Conn() *redis.Conn }

// canAdmit says whether admit can reach the node of a key through c.
func canAdmit(c redis.Scripter) bool {
	switch c.(type) {
	case cluster, single:
		return true
	}
	return false
}

// nodeConn returns a connection of its own to the primary that holds
// routeKey; the caller closes it.
func nodeConn(ctx context.Context, c redis.Scripter, routeKey string) (*redis.Conn, error) {
	switch c := c.(type) {
	case cluster:
		node, err := c.MasterForKey(ctx, routeKey)
		if err != nil {
			return nil, err
		}
		return node.Conn(), nil
	case single:
		return c.Conn(), nil
	}
	return nil, fmt.Errorf("no way to reach a single node through %T", c)
}

// uptime reads uptime_in_seconds from INFO server.
func uptime(info string) (int64, bool) {
	_, rest, ok := strings.Cut(info, "uptime_in_seconds:")
	if !ok {
		return 0, false
	}
	if i := strings.IndexAny(rest, "\r\n"); i >= 0 {
		rest = rest[:i]
	}
	n, err := strconv.ParseInt(rest, 10, 64)
	return n, err == nil
}

// graceError is the refusal of key by the grace of a node up for up
// seconds.
func (l *Locker) graceError(key string, up int64) *lock.HeldError {
	grace := time.Duration(l.graceSeconds()) * time.Second
	up = max(up, 0)
	// Until the uptime is above the grace.
	left := grace + time.Second - time.Duration(up)*time.Second
	return &lock.HeldError{Key: key, TTL: left, Reason: lock.ErrRestartGrace,
		Holder: fmt.Sprintf("redis restarted %s ago; new locks wait out the %s grace", time.Duration(up)*time.Second, grace)}
}
