package filelock

import (
	"encoding/json"
	"testing"

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

func TestParseRecordRejects(t *testing.T) {
	for _, give := range []string{
		"", " ", "{", "{}", "null", `{"key":"k"}`, `{"lock_id":"x"}`, `{"lock_id":"x","key":"k"`,
		`{"lock_id":"x","key":"k"} trailing`, `{"lock_id":1,"key":"k"}`, `{"lock_id":"x","key":"k","pid":"1"}`,
	} {
		_, ok := parseRecord([]byte(give))
		assert.False(t, ok, "%q", give)
	}
}

// FuzzParseRecord checks the fast parser against encoding/json: whatever it
// accepts, encoding/json reads the same way.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(`{"lock_id":"lock_a","key":"k","expires_at":10,"acquired_at":1,"pid":3,"fence":2,"state":"held"}`))
	f.Add([]byte(`{"lock_id":"lock_a","key":"k\u00e9","expires_at":10.5}`))
	f.Add([]byte(`  {"key":"k","lock_id":"l","extra":{"nested":[1,2]}}  `))
	f.Add([]byte(`{"lock_id":"l","key":"k","fence":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ok := scanFlat(b)
		if !ok {
			_, _ = parseRecord(b) // must not panic
			return
		}
		var slow record
		require.NoError(t, json.Unmarshal(b, &slow), "fast parser accepted what encoding/json rejects: %q", b)
		assert.Equal(t, slow, fast, "%q", b)
	})
}
