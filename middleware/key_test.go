package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/middleware"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeyTemplate(t *testing.T) {
	tests := []struct {
		name     string
		template string
		payload  string
		want     string
		wantErr  string
	}{
		{"field", "export-user-{{.user_id}}", `{"user_id": 42}`, "export-user-42", ""},
		{"string", "export-user-{{.user_id}}", `{"user_id": "u-42"}`, "export-user-u-42", ""},
		{"escaped string", "k-{{.s}}", `{"s": "caf\u00e9 \"x\""}`, `k-café "x"`, ""},
		{"escaped name", "k-{{.id}}", `{"\u0069d": 7}`, "k-7", ""},
		{"last duplicate wins", "k-{{.id}}", `{"id": 1, "id": 2}`, "k-2", ""},
		{"big number kept exact", "job-{{.id}}", `{"id": 12345678901234567890}`, "job-12345678901234567890", ""},
		{"42.0 is 42", "job-{{.id}}", `{"id": 42.0}`, "job-42", ""},
		{"4.2e1 is 42", "job-{{.id}}", `{"id": 4.2e1}`, "job-42", ""},
		{"420E-1 is 42", "job-{{.id}}", `{"id": 420E-1}`, "job-42", ""},
		{"fraction", "job-{{.id}}", `{"id": 0.50}`, "job-0.5", ""},
		{"small fraction", "job-{{.id}}", `{"id": -1.5e-3}`, "job--0.0015", ""},
		{"negative zero", "job-{{.id}}", `{"id": -0.0}`, "job-0", ""},
		{"bool", "flag-{{.on}}", `{"on": true}`, "flag-true", ""},
		{"nested", "cdn-{{.target.host}}", `{"target": {"host": "example.com"}, "x": [1, {"host": 2}]}`, "cdn-example.com", ""},
		{"task fields", "{{._type}}/{{._queue}}/{{._hash}}", `{}`, "export:user//" + middleware.PayloadHash([]byte(`{}`)), ""},
		{"function: text/template", `u-{{printf "%05s" .user_id}}`, `{"user_id": 4.2e1}`, "u-00042", ""},
		{"missing field", "export-user-{{.user_id}}", `{"id": 1}`, "", `payload has no field "user_id"`},
		{"missing nested field", "k-{{.a.b}}", `{"a": {"c": 1}}`, "", `payload has no field "a.b"`},
		{"not an object on the way", "k-{{.a.b}}", `{"a": 3}`, "", `"a" is not an object`},
		{"null field", "export-user-{{.user_id}}", `{"user_id": null}`, "", `field "user_id" is null`},
		{"null field, text/template", `u-{{printf "%s" .user_id}}`, `{"user_id": null}`, "", `no entry for key "user_id"`},
		{"empty field", "export-user-{{.user_id}}", `{"user_id": ""}`, "", `field "user_id" is an empty string`},
		{"object field", "k-{{.a}}", `{"a": {}}`, "", `field "a" is an object`},
		{"array field", "k-{{.a}}", `{"a": []}`, "", `field "a" is an array`},
		{"huge exponent", "k-{{.a}}", `{"a": 1e99999}`, "", "out of range for a key"},
		{"empty payload", "export-user-{{.user_id}}", ``, "", `payload has no field "user_id"`},
		{"not JSON", "export-user-{{.user_id}}", `user=42`, "", "payload is not JSON"},
		{"not an object", "export-user-{{.user_id}}", `[1,2]`, "", "payload is not a JSON object"},
		{"trailing data", "export-user-{{.user_id}}", `{"user_id":1} {}`, "", "data after the object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := middleware.KeyTemplate(tt.template)
			require.NoError(t, err)
			got, err := key(context.Background(), asynq.NewTask("export:user", []byte(tt.payload)))
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestKeyTemplateParseError(t *testing.T) {
	_, err := middleware.KeyTemplate("export-{{.user_id")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "export-{{.user_id")

	_, err = middleware.New(newFileLocker(t), middleware.WithRule("export:*", middleware.Rule{Template: "{{ bad"}))
	require.Error(t, err, "a bad template is an error at construction")
	assert.Contains(t, err.Error(), `rule "export:*"`)
}

func TestDefaultKey(t *testing.T) {
	ctx := context.Background()
	a, err := middleware.DefaultKey(ctx, asynq.NewTask("cache:regen", []byte(`{"id":1}`)))
	require.NoError(t, err)
	b, err := middleware.DefaultKey(ctx, asynq.NewTask("cache:regen", []byte(`{"id":1}`)))
	require.NoError(t, err)
	c, err := middleware.DefaultKey(ctx, asynq.NewTask("cache:regen", []byte(`{"id":2}`)))
	require.NoError(t, err)
	assert.Equal(t, a, b, "identical tasks share a key")
	assert.NotEqual(t, a, c)
	assert.True(t, strings.HasPrefix(a, "cache:regen:"))
}

// FuzzKeyTemplate checks the template renderer, which reads fields
// straight from the payload's bytes, against a reference built on
// encoding/json and math/big: both accept the same payloads and render the
// same keys.
func FuzzKeyTemplate(f *testing.F) {
	key, err := middleware.KeyTemplate("k-{{.a}}-{{.b.c}}-{{._type}}")
	require.NoError(f, err)
	for _, seed := range []string{`{"a":1,"b":{"c":"x"}}`, `{"a":4.2e1,"b":{"c":true}}`, `{"a":"é","b":{"c":-0.50}}`,
		`{"a":{"b":[1,2]}}`, `nope`, `{"a":null,"b":{"c":1}}`, `{"a":"","b":{"c":1}}`, `{"\u0061":1,"b":{"c":1}}`,
		`{"a":1e400,"b":{"c":1}}`, `{"a":"\ud800","b":{"c":1}}`, `{"a":1,"a":2,"b":{"c":0}}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, err := key(context.Background(), asynq.NewTask("t", payload))
		want, ok := referenceKey(payload)
		if !ok {
			require.Error(t, err, "rendered %q where the reference refuses", got)
			return
		}
		require.NoError(t, err)
		assert.Equal(t, want, got)
	})
}

// referenceKey renders "k-{{.a}}-{{.b.c}}-t" the slow, obvious way.
func referenceKey(payload []byte) (string, bool) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	if dec.Decode(&m) != nil || len(bytes.TrimSpace(payload[dec.InputOffset():])) > 0 {
		return "", false
	}
	a, ok := referenceValue(m["a"])
	if !ok {
		return "", false
	}
	b, _ := m["b"].(map[string]any)
	c, ok := referenceValue(b["c"])
	if !ok {
		return "", false
	}
	return "k-" + a + "-" + c + "-t", true
}

func referenceValue(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, v != ""
	case bool:
		return strconv.FormatBool(v), true
	case json.Number:
		return referenceNumber(string(v))
	}
	return "", false
}

// referenceNumber renders a JSON number exactly with math/big, refusing
// what would not fit in a key (and exponents of a million or more).
func referenceNumber(lit string) (string, bool) {
	mant, exp, _ := strings.Cut(strings.ToLower(lit), "e")
	if strings.Trim(mant, "-0.") == "" {
		return "0", true
	}
	if e, err := strconv.Atoi(exp); exp != "" && (err != nil || e >= 1e6 || e <= -1e6) {
		return "", false
	}
	r, ok := new(big.Rat).SetString(lit)
	if !ok {
		return "", false
	}
	s := r.Num().String()
	if !r.IsInt() {
		for digits := 1; digits <= lock.MaxKeyLen; digits++ {
			if s = r.FloatString(digits); !strings.HasSuffix(s, "0") {
				break
			}
		}
	}
	return s, len(s) <= lock.MaxKeyLen
}
