package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/joblock/joblock/lock"
)

// maxLine bounds one request line, newline excluded. A request is a key of
// at most lock.MaxKeyLen bytes and a few fields: a longer line is refused
// without being kept in memory.
const maxLine = 1 << 20

// cmdServeStdio answers the spec's JSON requests, one per line, with its
// JSON results, one per line, until stdin ends. A line that is not a
// request (not JSON, not valid UTF-8, or with a field the spec does not
// have: see lock.Request) gets an error result and the stream goes on.
// Locks stay held
// after the stream ends, until released (by lock_id, from any process) or
// expired, as a LockManager's do when its PHP process exits.
func cmdServeStdio(ctx context.Context, e *env) error {
	l, closeFn, err := e.start(ctx, false, 0, "no arguments")
	if err != nil {
		return err
	}
	defer closeFn()
	return serveLines(ctx, lock.NewManager(l), e.stdin, e.stdout, maxLine)
}

// serveLines answers every non-blank line of r with one result line on w,
// until r ends (nil) or reading or writing fails. Lines over limit bytes
// get an error result; they are read to their end but never held whole.
func serveLines(ctx context.Context, m *lock.Manager, r io.Reader, w io.Writer, limit int) error {
	in := bufio.NewReader(r)
	out := json.NewEncoder(w)
	for {
		line, n, err := readLine(in, limit)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("serve-stdio: reading requests: %w", err)
		}
		var res lock.Result
		switch {
		case n > limit:
			res.Error = fmt.Sprintf("bad request: line of %d bytes is over the limit of %d bytes", n, limit)
		case len(bytes.TrimSpace(line)) == 0:
			if err != nil {
				return nil
			}
			continue
		default:
			res = handleLine(ctx, m, line)
		}
		if werr := out.Encode(res); werr != nil {
			return werr
		}
		if err != nil {
			return nil
		}
	}
}

// readLine reads one line, newline excluded, and its length n. A line of
// more than limit bytes is consumed to its end and returned as nil with
// its full length. err is io.EOF at the end of input, after any last line
// without a newline.
func readLine(in *bufio.Reader, limit int) (line []byte, n int, err error) {
	for {
		chunk, err := in.ReadSlice('\n')
		n += len(chunk)
		if err == nil {
			n-- // the newline
			chunk = chunk[:len(chunk)-1]
		}
		if n <= limit {
			line = append(line, chunk...)
		} else {
			line = nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return line, n, err
		}
	}
}

// handleLine carries out one request line and says how it went.
func handleLine(ctx context.Context, m *lock.Manager, line []byte) lock.Result {
	var req lock.Request
	if err := json.Unmarshal(line, &req); err != nil {
		return lock.Result{Error: fmt.Sprintf("bad request %q: %v", truncate(line, 80), err)}
	}
	return m.Process(ctx, req)
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}
