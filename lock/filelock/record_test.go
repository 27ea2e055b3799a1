package filelock

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"testing"
	"time"

	"github.com/joblock/joblock/lock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRecordRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		give record
	}{
		{"ours", record{LockID: "lock_X", Key: "cache:product-1", ExpiresAt: 1700000031, AcquiredAt: 1700000000, PID: 42,
			Host: "web-1", Fence: 7, State: "held", ExpiresAtMs: 1700000030500, AcquiredAtMs: 1700000000500,
			BootID: "f056e7c4", BootExpires: 123456789}},
		{"escapes", record{LockID: "lock_Y", Key: "a \"quoted\" \\ key/ü/日本", PID: 1, Fence: 1}},
		{"no boot clock", record{LockID: "lock_Z", Key: "k", State: stateReleased, ExpiresAt: 5, ExpiresAtMs: 5000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := encodePadded(nil, &tt.give, 2000)
			assert.Len(t, b, 2000)
			var viaJSON record
			require.NoError(t, json.Unmarshal(b, &viaJSON), "%s", b)
			assert.Equal(t, tt.give, viaJSON)
			got, ok := parseRecord(b)
			require.True(t, ok)
			assert.Equal(t, tt.give, got)
		})
	}
}

// encodeWithJSON is what encodePadded wrote before it was written out by
// hand, and what it must still write: encoding/json with HTML escaping off,
// padded with spaces to size bytes.
func encodeWithJSON(t *testing.T, rec *record, size int) []byte {
	t.Helper()
	var w bytes.Buffer
	enc := json.NewEncoder(&w)
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(rec))
	b := bytes.TrimSuffix(w.Bytes(), []byte("\n"))
	for len(b)+1 < size {
		b = append(b, ' ')
	}
	return append(b, '\n')
}

func TestEncodePaddedWritesWhatEncodingJSONWrites(t *testing.T) {
	strs := []string{"", "k", "lock_0123abcd", "a \"quoted\" \\ key", "<&>", "tab\tnl\ncr\rbs\bff\f\x00\x1f\x7f",
		"ü/日本", "\u2028\u2029", "bad\xff\xfeutf8", "\xe2\x80", "~ !#"}
	ints := []int64{0, 1, -1, 1700000000500, math.MaxInt64, math.MinInt64}
	for i, s := range strs {
		for j, n := range ints {
			rec := record{LockID: s, Key: strs[(i+1)%len(strs)], Host: strs[(i+2)%len(strs)], State: strs[(i+3)%len(strs)],
				BootID: strs[(i+4)%len(strs)], ExpiresAt: n, AcquiredAt: ints[(j+1)%len(ints)], PID: int(ints[(j+2)%len(ints)]),
				Fence: uint64(ints[(j+3)%len(ints)]), ExpiresAtMs: ints[(j+4)%len(ints)], AcquiredAtMs: ints[(j+5)%len(ints)],
				BootExpires: n, Limit: int(ints[(j+1)%len(ints)])}
			for _, size := range []int{0, 1, 60, 500} {
				assert.Equal(t, string(encodeWithJSON(t, &rec, size)), string(encodePadded(nil, &rec, size)), "%+v size %d", rec, size)
			}
		}
	}
	// Appended to a buffer that holds something already, the padding counts
	// only the record.
	rec := record{LockID: "l", Key: "k"}
	assert.Equal(t, "xyz"+string(encodeWithJSON(t, &rec, 100)), string(encodePadded([]byte("xyz"), &rec, 100)))
}

func TestParseRecordRejects(t *testing.T) {
	for _, give := range []string{
		"", " ", "{", "{}", "null", `{"key":"k"}`, `{"lock_id":"x"}`, `{"lock_id":"x","key":"k"`,
		`{"lock_id":"x","key":"k"} trailing`, `{"lock_id":1,"key":"k"}`, `{"lock_id":"x","key":"k","pid":"1"}`,
	} {
		_, ok := parseRecord([]byte(give))
		assert.False(t, ok, "%q", give)
	}
}

// FuzzParseRecord holds the fast parser to encoding/json: whatever it
// accepts, encoding/json reads the same way. Every record parseRecord
// accepts encodes and parses back to itself, and is judged without
// overflow: live exactly when its expiry is ahead.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(`{"lock_id":"lock_a","key":"k","expires_at":10,"acquired_at":1,"pid":3,"fence":2,"state":"held"}`))
	f.Add([]byte(`{"lock_id":"lock_a","key":"k\u00e9","expires_at":10.5}`))
	f.Add([]byte(`  {"key":"k","lock_id":"l","extra":{"nested":[1,2]}}  `))
	f.Add([]byte(`{"lock_id":"l","key":"k","fence":-1}`))
	f.Add([]byte(`{"lock_id":"l","key":"k","fence":-0}`))
	f.Add([]byte(`{"lock_id":"l","key":"k","fence":18446744073709551615}`))
	f.Add([]byte("{\"lock_id\":\"l\xff\",\"key\":\"k\"}"))
	f.Add([]byte(`{"lock_id":"l","key":"<&>","expires_at":9223372036854775807}`))
	f.Add([]byte(`{"lock_id":"l","key":"k","expires_at_ms":253402300799999,"boot_id":"b","boot_expires_ns":-9223372036854775808}`))
	f.Add(encodePadded(nil, &record{LockID: "lock_X", Key: "cache:1", ExpiresAt: 1700000031, AcquiredAt: 1700000000, PID: 42,
		Host: "web-1", Fence: 7, State: "held", ExpiresAtMs: 1700000030500, AcquiredAtMs: 1700000000500,
		BootID: "f056e7c4/time:[4026531834]", BootExpires: 123456789}, 400))
	f.Fuzz(func(t *testing.T, b []byte) {
		if fast := (record{}); scanFlat(b, &fast) {
			var slow record
			require.NoError(t, json.Unmarshal(b, &slow), "fast parser accepted what encoding/json rejects: %q", b)
			assert.Equal(t, slow, fast, "%q", b)
		}
		rec, ok := parseRecord(b)
		if !ok {
			return
		}
		enc := encodePadded(nil, &rec, len(b))
		assert.Equal(t, string(encodeWithJSON(t, &rec, len(b))), string(enc), "record parsed from %q", b)
		again, ok := parseRecord(enc)
		require.True(t, ok, "a record parsed from %q does not parse back", b)
		assert.Equal(t, rec, again)

		for _, now := range []instant{
			{wall: time.UnixMilli(1700000000000)},
			{wall: time.UnixMilli(1700000000000), bootID: rec.BootID, boot: time.Hour},
		} {
			var want *big.Int // expiry minus now, exactly
			if rec.BootID != "" && rec.BootID == now.bootID {
				want = new(big.Int).Sub(big.NewInt(rec.BootExpires), big.NewInt(int64(now.boot)))
			} else {
				exp := big.NewInt(rec.ExpiresAtMs)
				if rec.ExpiresAtMs == 0 {
					exp.Mul(big.NewInt(rec.ExpiresAt), big.NewInt(1000))
				}
				want = exp.Sub(exp, big.NewInt(now.wall.UnixMilli()))
			}
			st, left := rec.judge(now)
			switch {
			case rec.State == stateReleased:
				assert.Equal(t, lock.Released, st)
			case want.Sign() > 0:
				assert.Equal(t, lock.Held, st, "%q: expiry ahead by %s but judged %s", b, want, st)
				assert.Positive(t, left)
			default:
				assert.Equal(t, lock.Expired, st, "%q: expiry behind by %s but judged %s", b, want, st)
			}
			_, err := json.Marshal(rec.toRecord(now))
			assert.NoError(t, err, "a parsed record must encode for list -json and /locks")
		}
	})
}
