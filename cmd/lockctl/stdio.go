package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/joblock/joblock/lock"
)

// maxLine bounds one request line.
const maxLine = 1 << 20

// cmdServeStdio answers the spec's JSON requests, one per line, with its
// JSON results, one per line, until stdin ends. A line that is not a
// request gets an error result and the stream goes on. Locks stay held
// after the stream ends, until released (by lock_id, from any process) or
// expired, as a LockManager's do when its PHP process exits.
func cmdServeStdio(ctx context.Context, e *env) error {
	l, closeFn, err := e.start(ctx, false, 0, "no arguments")
	if err != nil {
		return err
	}
	defer closeFn()
	m := lock.NewManager(l)
	out := json.NewEncoder(e.stdout)
	sc := bufio.NewScanner(e.stdin)
	sc.Buffer(make([]byte, 0, 64*1024), maxLine)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var req lock.Request
		res := lock.Result{}
		if err := json.Unmarshal(line, &req); err != nil {
			res.Error = fmt.Sprintf("bad request %q: %v", truncate(line, 80), err)
		} else {
			res = m.Process(ctx, req)
		}
		if err := out.Encode(res); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("serve-stdio: reading requests: %w", err)
	}
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "..."
}
