package redislock

import (
	"context"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"
)

// pipeliner is what a client needs for batching: every go-redis client has
// it, a bare Scripter does not.
type pipeliner interface {
	redis.Scripter
	Pipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

// batcher sends the scripts of concurrent callers together, group-commit
// style: a caller that finds fewer than maxInFlight round trips under way
// sends its own script at once (alone, exactly as without batching);
// callers that arrive while the wire is busy queue up, and when a round trip
// returns the first of them sends the whole queue as one pipeline. No goroutine, no timer, no added latency
// for a lone caller; one write and one read for many concurrent ones.
type batcher struct {
	client pipeliner

	mu       sync.Mutex
	queue    []*call
	inFlight int
}

// maxInFlight is how many batches may be on the wire at once. One would
// serialise every caller behind one round trip; a few keep the connection
// pool busy while later arrivals gather into the next batch. Eight lets
// as many callers as asynq's default Concurrency (ten) mostly go out at
// once, each on a round trip of its own, where four made callers queue
// for a batch while connections sat idle; under more callers than that,
// batches form as before.
const maxInFlight = 8

type call struct {
	script *redis.Script
	load   bool // sent whole after NOSCRIPT (see Locker.exec)
	keys   []string
	args   []any
	cmd    *redis.Cmd
	// ready gets one signal when cmd is set, or when the call is promoted
	// to send the next batch (lead is then true). A buffered channel rather
	// than a closed one, so calls can be reused.
	ready chan struct{}
	lead  bool
	batch []*call // the sender's scratch space, reused
}

var callPool = sync.Pool{New: func() any { return &call{ready: make(chan struct{}, 1)} }}

func (b *batcher) run(ctx context.Context, s *redis.Script, load bool, keys []string, args ...any) *redis.Cmd {
	b.mu.Lock()
	if b.inFlight < maxInFlight {
		b.inFlight++
		b.mu.Unlock()
		var cmd *redis.Cmd
		if load {
			cmd = s.Run(ctx, b.client, keys, args...)
		} else {
			cmd = s.EvalSha(ctx, b.client, keys, args...)
		}
		b.handOff()
		return cmd
	}
	c := callPool.Get().(*call)
	defer callPool.Put(c)
	c.script, c.load, c.keys, c.args, c.cmd, c.lead = s, load, keys, args, nil, false
	b.queue = append(b.queue, c)
	b.mu.Unlock()

	select {
	case <-c.ready:
	case <-ctx.Done():
		b.mu.Lock()
		if i := slices.Index(b.queue, c); i >= 0 {
			// Not sent yet: withdraw it.
			b.queue = slices.Delete(b.queue, i, i+1)
			b.mu.Unlock()
			cmd := redis.NewCmd(ctx)
			cmd.SetErr(ctx.Err())
			return cmd
		}
		b.mu.Unlock()
		// Already sent, or promoted: its outcome is moments away, and a
		// lock it obtained must be reported, not leaked.
		<-c.ready
	}
	if !c.lead {
		return c.cmd
	}
	b.mu.Lock()
	batch := append(append(c.batch[:0], c), b.queue...)
	c.batch = batch[:0]
	b.queue = b.queue[:0:0]
	b.mu.Unlock()
	b.send(ctx, batch)
	b.handOff()
	return c.cmd
}

// handOff promotes the first queued call to send the next batch, or marks
// the batcher idle.
func (b *batcher) handOff() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.inFlight--
		return
	}
	next := b.queue[0]
	b.queue = b.queue[1:]
	next.lead = true
	next.ready <- struct{}{}
}

// send runs a batch as one pipeline and resolves every call in it but the
// sender's own (the first). One caller's cancellation must not fail the
// others' commands, so the pipeline runs without cancellation, bounded by
// the client's read and write timeouts.
func (b *batcher) send(ctx context.Context, batch []*call) {
	pctx := context.WithoutCancel(ctx)
	_, _ = b.client.Pipelined(pctx, func(p redis.Pipeliner) error {
		for _, c := range batch {
			c.cmd = c.script.EvalSha(pctx, p, c.keys, c.args...)
		}
		return nil
	})
	var missing []*call
	for _, c := range batch {
		if c.load && redis.HasErrorPrefix(c.cmd.Err(), "NOSCRIPT") {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		_, _ = b.client.Pipelined(pctx, func(p redis.Pipeliner) error {
			for _, c := range missing {
				c.cmd = c.script.Eval(pctx, p, c.keys, c.args...)
			}
			return nil
		})
	}
	for _, c := range batch[1:] {
		c.ready <- struct{}{}
	}
	clear(batch) // drop references before the slice is reused
}
