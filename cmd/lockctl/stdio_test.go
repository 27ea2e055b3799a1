package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/lock/filelock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newManager(t testing.TB, dir string) *lock.Manager {
	l, err := filelock.New(dir)
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	return lock.NewManager(l)
}

// results decodes serveLines's output, one result per line.
func results(t *testing.T, out []byte) []lock.Result {
	t.Helper()
	var res []lock.Result
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r lock.Result
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r), "%s", sc.Bytes())
		res = append(res, r)
	}
	return res
}

func TestServeLines(t *testing.T) {
	const limit = 64
	acquire := func(key string) string { return `{"key":"` + key + `","action":"acquire","timeout":5}` }
	tests := []struct {
		name string
		give string
		want []string // per result: "locked", or a substring of its error
	}{
		{"one request", acquire("a") + "\n", []string{"locked"}},
		{"last line without newline", acquire("a") + "\n" + acquire("b"), []string{"locked", "locked"}},
		{"blank lines skipped", "\n  \n" + acquire("a") + "\r\n\n", []string{"locked"}},
		{"over-long line, then the stream goes on",
			`{"key":"` + strings.Repeat("x", limit) + `"}` + "\n" + acquire("a") + "\n",
			[]string{"line of 74 bytes is over the limit of 64 bytes", "locked"}},
		{"over-long blank line", strings.Repeat(" ", limit+1) + "\n" + acquire("a"),
			[]string{"line of 65 bytes is over the limit of 64 bytes", "locked"}},
		{"over-long last line", acquire("a") + "\n" + strings.Repeat("y", 5000),
			[]string{"locked", "line of 5000 bytes is over the limit"}},
		{"exactly the limit", sized(limit) + "\n", []string{"locked"}},
		{"one byte over the limit", sized(limit+1) + "\n", []string{"line of 65 bytes is over the limit of 64 bytes"}},
		{"not JSON", "hello\n" + acquire("a"), []string{"bad request \"hello\"", "locked"}},
		{"unknown field, then the stream goes on", `{"key":"u","action":"acquire","ttl":300}` + "\n" + acquire("a"),
			[]string{`lock: unknown field "ttl" in request`, "locked"}},
		{"not UTF-8, then the stream goes on", "{\"key\":\"a\xffb\",\"action\":\"acquire\"}\n" + acquire("a\xfeb") + "\n" + acquire("a"),
			[]string{"lock: request is not valid UTF-8: byte 0xff at offset 9", "lock: request is not valid UTF-8: byte 0xfe at offset 9", "locked"}},
		{"timeout that wrapped", `{"key":"t","action":"acquire","timeout":9223372037}`,
			[]string{"timeout 9223372037 s is over the maximum of 31536000 s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, t.TempDir())
			var out bytes.Buffer
			require.NoError(t, serveLines(context.Background(), m, strings.NewReader(tt.give), &out, limit))
			got := results(t, out.Bytes())
			require.Len(t, got, len(tt.want), "%s", out.Bytes())
			for i, want := range tt.want {
				if want == "locked" {
					assert.True(t, got[i].Locked, "result %d: %+v", i, got[i])
					continue
				}
				assert.False(t, got[i].Locked)
				assert.Contains(t, got[i].Error, want, "result %d", i)
			}
		})
	}
}

// sized is an acquire request of exactly n bytes.
func sized(n int) string {
	const head, tail = `{"key":"`, `","action":"acquire"}`
	return head + strings.Repeat("k", n-len(head)-len(tail)) + tail
}

func TestServeLinesRealLimit(t *testing.T) {
	m := newManager(t, t.TempDir())
	in := strings.Repeat("x", maxLine+1) + "\n" + `{"key":"k","action":"acquire"}` + "\n"
	var out bytes.Buffer
	require.NoError(t, serveLines(context.Background(), m, strings.NewReader(in), &out, maxLine))
	got := results(t, out.Bytes())
	require.Len(t, got, 2)
	assert.Equal(t, "bad request: line of 1048577 bytes is over the limit of 1048576 bytes", got[0].Error)
	assert.True(t, got[1].Locked, "the stream goes on after an over-long line")
}

// FuzzServeStdio feeds arbitrary input to serve-stdio's line handling on a
// real file engine: one result line per line that is over the limit or not
// blank, each a JSON result, and the stream never stops early.
func FuzzServeStdio(f *testing.F) {
	for _, seed := range []string{
		`{"key":"abc123","action":"acquire","timeout":30}` + "\n" + `{"key":"abc123","action":"release"}`,
		"\n\n \r\n",
		`{"key": "abc123", "action": ` + "\n" + `{"key":"x","action":"steal"}`,
		strings.Repeat("a", 300) + "\n" + `{"key":"k","action":"acquire"}`,
		`{"key":"k","action":"acquire","timeout":18446744074}`,
		"\xff\xfe\n\x00",
	} {
		f.Add([]byte(seed))
	}
	m := newManager(f, f.TempDir())
	const limit = 256
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		require.NoError(t, serveLines(context.Background(), m, bytes.NewReader(in), &out, limit))
		want := 0
		for _, line := range bytes.Split(in, []byte("\n")) {
			if len(line) > limit || len(bytes.TrimSpace(line)) > 0 {
				want++
			}
		}
		got := results(t, out.Bytes())
		require.Len(t, got, want, "input %q", in)
		for _, r := range got {
			assert.True(t, r.Locked || r.AlreadyLocked || r.Released != nil || r.Error != "", "an empty result: %+v", r)
		}
	})
}
