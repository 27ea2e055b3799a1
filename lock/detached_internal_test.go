package lock

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type ctxKey struct{}

// detachedTimeout behaves as context.WithTimeout over
// context.WithoutCancel: the parent's values, not its end, and its own
// deadline, reported by Err whether or not anything waits on Done.
func TestDetachedTimeout(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	cancelParent()

	t.Run("values, not the parent's end", func(t *testing.T) {
		ctx, cancel := detachedTimeout(parent, time.Hour)
		defer cancel()
		assert.Equal(t, "v", ctx.Value(ctxKey{}))
		require.NoError(t, ctx.Err())
		select {
		case <-ctx.Done():
			t.Fatal("done with the parent")
		default:
		}
		d, ok := ctx.Deadline()
		assert.True(t, ok)
		assert.True(t, d.After(time.Now().Add(59*time.Minute)), "deadline %v", d)
	})

	t.Run("deadline passed, Done never asked for", func(t *testing.T) {
		ctx, cancel := detachedTimeout(parent, time.Millisecond)
		defer cancel()
		d, _ := ctx.Deadline()
		for time.Now().Before(d) {
			time.Sleep(time.Millisecond)
		}
		assert.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
		assert.ErrorIs(t, context.Cause(ctx), context.DeadlineExceeded)
		select {
		case <-ctx.Done():
		default:
			t.Fatal("Done not closed after Err reported the deadline")
		}
		cancel()
		assert.ErrorIs(t, ctx.Err(), context.DeadlineExceeded, "cancel after the end changed why it ended")
	})

	t.Run("Done asked for before the deadline", func(t *testing.T) {
		ctx, cancel := detachedTimeout(parent, 20*time.Millisecond)
		defer cancel()
		done := ctx.Done()
		// A context derived from it ends with it, as from any context.
		child, cancelChild := context.WithCancel(ctx)
		defer cancelChild()
		<-done
		assert.ErrorIs(t, ctx.Err(), context.DeadlineExceeded)
		<-child.Done()
		assert.ErrorIs(t, child.Err(), context.DeadlineExceeded)
		d, _ := ctx.Deadline()
		assert.False(t, time.Now().Before(d), "ended before its deadline")
	})

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := detachedTimeout(parent, time.Hour)
		done := ctx.Done()
		cancel()
		<-done
		assert.ErrorIs(t, ctx.Err(), context.Canceled)
		ctx, cancel = detachedTimeout(parent, time.Hour)
		cancel()
		assert.ErrorIs(t, ctx.Err(), context.Canceled)
		<-ctx.Done()
	})

	t.Run("concurrent use", func(t *testing.T) {
		ctx, cancel := detachedTimeout(parent, time.Millisecond)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if i%4 == 0 {
					cancel()
				}
				<-ctx.Done()
				assert.Error(t, ctx.Err())
			}()
		}
		wg.Wait()
	})
}
