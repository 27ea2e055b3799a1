package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"unicode"

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
		{"big number kept exact", "job-{{.id}}", `{"id": 12345678901234567890}`, "job-12345678901234567890", ""},
		{"2^53+1 is not 2^53", "job-{{.id}}", `{"id": 9007199254740993}`, "job-9007199254740993", ""},
		{"42.0 is 42", "job-{{.id}}", `{"id": 42.0}`, "job-42", ""},
		{"4.2e1 is 42", "job-{{.id}}", `{"id": 4.2e1}`, "job-42", ""},
		{"420E-1 is 42", "job-{{.id}}", `{"id": 420E-1}`, "job-42", ""},
		{"fraction", "job-{{.id}}", `{"id": 0.50}`, "job-0.5", ""},
		{"small fraction", "job-{{.id}}", `{"id": -1.5e-3}`, "job--0.0015", ""},
		{"negative zero", "job-{{.id}}", `{"id": -0.0}`, "job-0", ""},
		{"bool", "flag-{{.on}}", `{"on": true}`, "flag-true", ""},
		{"nested", "cdn-{{.target.host}}", `{"target": {"host": "example.com"}, "x": [1, {"host": 2}]}`, "cdn-example.com", ""},
		{"task fields", "{{._type}}/{{._queue}}/{{._hash}}", `{}`, "export:user//" + middleware.PayloadHash([]byte(`{}`)), ""},
		{"a name only folded is missing", "export-user-{{.user_id}}", `{"USER_ID": 1}`, "", `payload has no field "user_id"`},
		{"duplicates of unused fields", "k-{{.id}}", `{"id": 1, "x": 1, "x": 2, "y": {"id": 1, "ID": 2}}`, "k-1", ""},
		{"missing field", "export-user-{{.user_id}}", `{"id": 1}`, "", `payload has no field "user_id"`},
		{"missing nested field", "k-{{.a.b}}", `{"a": {"c": 1}}`, "", `payload has no field "a.b"`},
		{"not an object on the way", "k-{{.a.b}}", `{"a": 3}`, "", `field "a.b": "a" is not an object`},
		{"null field", "export-user-{{.user_id}}", `{"user_id": null}`, "", `field "user_id" is null`},
		{"empty field", "export-user-{{.user_id}}", `{"user_id": ""}`, "", `field "user_id" is empty or only white space`},
		{"space field", "export-user-{{.user_id}}", `{"user_id": "   "}`, "", `field "user_id" is empty or only white space`},
		{"escaped white space", "export-user-{{.user_id}}", `{"user_id": "\t\u00a0\u3000\n"}`, "", `field "user_id" is empty or only white space`},
		{"control character", "export-user-{{.user_id}}", `{"user_id": "a\u0000b"}`, "",
			`lock: invalid key: field "user_id" holds control character U+0000`},
		{"DEL", "export-user-{{.user_id}}", "{\"user_id\": \"a\x7fb\"}", "", `lock: invalid key: field "user_id" holds control character U+007F`},
		{"C1 control", "k-{{.a.b}}", `{"a": {"b": "x\u0085"}}`, "", `lock: invalid key: field "a.b" holds control character U+0085`},
		{"duplicate", "k-{{.id}}", `{"id": 1, "id": 2}`, "",
			`field "id" is ambiguous: the payload has it twice, and a handler may read either`},
		{"duplicate, upper case", "export-user-{{.user_id}}", `{"user_id": 1, "USER_ID": 2}`, "",
			`field "user_id" is ambiguous: the payload has it as both "user_id" and "USER_ID", and a handler may read either`},
		{"duplicate, long s", "export-user-{{.user_id}}", `{"uſer_id": 2, "user_id": 1}`, "",
			`field "user_id" is ambiguous: the payload has it as both "uſer_id" and "user_id", and a handler may read either`},
		{"duplicate, Kelvin sign", "k-{{.k}}", `{"k": 1, "\u212a": 2}`, "",
			`field "k" is ambiguous: the payload has it as both "k" and "\u212a", and a handler may read either`},
		{"duplicate nested", "k-{{.a.b}}", `{"a": {"b": 1, "B": 2}}`, "",
			`field "a.b" is ambiguous: the payload has it as both "b" and "B", and a handler may read either`},
		{"duplicate on the way", "k-{{.a.b}}", `{"a": {"b": 1}, "A": {"b": 2}}`, "",
			`field "a" is ambiguous: the payload has it as both "a" and "A", and a handler may read either`},
		{"object field", "k-{{.a}}", `{"a": {}}`, "", `field "a" is an object, not a value`},
		{"array field", "k-{{.a}}", `{"a": []}`, "", `field "a" is an array, not a value`},
		{"huge exponent", "k-{{.a}}", `{"a": 1e99999}`, "", `field "a": number 1e99999 is out of range for a key`},
		{"empty payload", "export-user-{{.user_id}}", ``, "", `payload has no field "user_id"`},
		{"not JSON", "export-user-{{.user_id}}", `user=42`, "", "payload is not JSON: invalid character 'u' looking for beginning of value"},
		{"not an object", "export-user-{{.user_id}}", `[1,2]`, "", "payload is not a JSON object"},
		{"trailing data", "export-user-{{.user_id}}", `{"user_id":1} {}`, "", "payload is not JSON: data after the object"},

		{"function", `u-{{printf "%05s" .user_id}}`, `{"user_id": 4.2e1}`, "u-00042", ""},
		{"function: null field", `u-{{printf "%s" .user_id}}`, `{"user_id": null}`, "",
			`key template "u-{{printf \"%s\" .user_id}}": template: key:1:16: executing "key" at <.user_id>: map has no entry for key "user_id"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := middleware.KeyTemplate(tt.template)
			require.NoError(t, err)
			got, err := key(context.Background(), asynq.NewTask("export:user", []byte(tt.payload)))
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				assert.Empty(t, got)
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
// encoding/json's token stream and math/big: both accept the same payloads
// and render the same keys, and the renderer's errors name the field at
// fault.
func FuzzKeyTemplate(f *testing.F) {
	key, err := middleware.KeyTemplate("k-{{.a}}-{{.b.c}}-{{._type}}")
	require.NoError(f, err)
	for _, seed := range []string{`{"a":1,"b":{"c":"x"}}`, `{"a":4.2e1,"b":{"c":true}}`, `{"a":"é","b":{"c":-0.50}}`,
		`{"a":{"b":[1,2]}}`, `nope`, `{"a":null,"b":{"c":1}}`, `{"a":"","b":{"c":1}}`, `{"\u0061":1,"b":{"c":1}}`,
		`{"a":1e400,"b":{"c":1}}`, `{"a":"\ud800","b":{"c":1}}`, `{"a":1,"a":2,"b":{"c":0}}`,
		`{"a":1,"A":2,"b":{"c":0}}`, `{"a":1,"b":{"c":0,"\u0043":1}}`, `{"a":1,"b":{"c":0},"B":{}}`,
		`{"a":" ","b":{"c":1}}`, `{"a":"\u3000","b":{"c":1}}`, `{"a":"x\u0000","b":{"c":1}}`, "{\"a\":\"\x7f\",\"b\":{\"c\":1}}",
		`{"a":1,"b":{"c":"\u0085"}}`, `{"a":9007199254740993,"b":{"c":[1]}}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, err := key(context.Background(), asynq.NewTask("t", payload))
		want, field, ok := referenceKey(payload)
		if !ok {
			require.Error(t, err, "rendered %q where the reference refuses", got)
			if field != "" {
				assert.Contains(t, err.Error(), strconv.Quote(field))
			}
			return
		}
		require.NoError(t, err)
		assert.Equal(t, want, got)
	})
}

// referenceKey renders "k-{{.a}}-{{.b.c}}-t" the slow, obvious way; field
// is the field a refusal must name, if it is about one.
func referenceKey(payload []byte) (key, field string, ok bool) {
	p := bytes.TrimSpace(payload)
	if len(p) == 0 {
		return "", "a", false
	}
	if !json.Valid(p) {
		return "", "", false
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	v, err := referenceDecode(dec)
	if err != nil {
		panic(err) // json.Valid accepted it
	}
	obj, isObj := v.(referenceObject)
	if !isObj {
		return "", "", false
	}
	a, ok := obj.get("a")
	if !ok {
		return "", "a", false
	}
	as, ok := referenceValue(a)
	if !ok {
		return "", "a", false
	}
	b, ok := obj.get("b")
	if !ok {
		if obj.count("b") > 1 {
			return "", "b", false
		}
		return "", "b.c", false
	}
	bobj, _ := b.(referenceObject)
	c, ok := bobj.get("c")
	if !ok {
		return "", "b.c", false
	}
	cs, ok := referenceValue(c)
	if !ok {
		return "", "b.c", false
	}
	return "k-" + as + "-" + cs + "-t", "", true
}

// A decoded JSON value keeps every member of an object, in order.
type (
	referenceObject []referenceMember
	referenceMember struct {
		name  string
		value any
	}
	referenceArray []any
)

func referenceDecode(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		obj := referenceObject{}
		for dec.More() {
			name, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := referenceDecode(dec)
			if err != nil {
				return nil, err
			}
			obj = append(obj, referenceMember{name.(string), v})
		}
		_, err := dec.Token()
		return obj, err
	case json.Delim('['):
		arr := referenceArray{}
		for dec.More() {
			v, err := referenceDecode(dec)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		_, err := dec.Token()
		return arr, err
	}
	return tok, nil
}

// get returns the member named name, as encoding/json would give a struct
// field tagged with it, if exactly one member is: a member named so
// exactly, and no other that equals it under case folding.
func (o referenceObject) get(name string) (any, bool) {
	for _, m := range o {
		if m.name == name && o.count(name) == 1 {
			return m.value, true
		}
	}
	return nil, false
}

// count is how many members are named name under case folding.
func (o referenceObject) count(name string) int {
	n := 0
	for _, m := range o {
		if strings.EqualFold(m.name, name) {
			n++
		}
	}
	return n
}

func referenceValue(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, strings.TrimSpace(v) != "" && !strings.ContainsFunc(v, unicode.IsControl)
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
