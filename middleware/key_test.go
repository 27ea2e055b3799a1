package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode"

	"github.com/hibiken/asynq"
	"github.com/joblock/joblock/internal/redistest"
	"github.com/joblock/joblock/lock"
	"github.com/joblock/joblock/middleware"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKeyTemplate(t *testing.T) {
	const printf = `u-{{printf "%v" .user_id}}` // functions: text/template over the decoded payload
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
		{"function: nested numbers canonical", `ids-{{index .ids 0}}-{{index .m.n 1}}`, `{"ids": [42.0], "m": {"n": [1, 4.2e1]}}`, "ids-42-42", ""},
		{"function: range", `ids-{{range .ids}}{{.}},{{end}}`, `{"ids": [1, 2.0, 3e0]}`, "ids-1,2,3,", ""},
		{"function: eq on an empty string", `r-{{if eq .region ""}}all{{else}}{{.region}}{{end}}`, `{"region": ""}`, "r-all", ""},
		{"function: quoting a control character", `k-{{printf "%q" .s}}`, `{"s": "a\u0000"}`, `k-"a\x00"`, ""},
		{"function: 2^53+1 is not 2^53", `k-{{index .ids 0}}`, `{"ids": [9007199254740993]}`, "k-9007199254740993", ""},
		{"function: empty field", printf, `{"user_id": ""}`, "", `field "user_id" is empty or only white space`},
		{"function: space field", printf, `{"user_id": " "}`, "", `field "user_id" is empty or only white space`},
		{"function: any verb", `u-{{printf "%x" .user_id}}`, `{"user_id": ""}`, "", `field "user_id" is empty or only white space`},
		{"function: object field", printf, `{"user_id": {"a": 1}}`, "", `field "user_id" is an object, not a value`},
		{"function: object field, %d", `u-{{printf "%d" .user_id}}`, `{"user_id": {"a": 1}}`, "", `field "user_id" is an object, not a value`},
		{"function: array field", printf, `{"user_id": [1, 2]}`, "", `field "user_id" is an array, not a value`},
		{"function: array element", `ids-{{index .ids 0}}`, `{"ids": [[1]]}`, "", `field "ids[0]" is an array, not a value`},
		{"function: null element", `ids-{{index .ids 1}}`, `{"ids": [1, null]}`, "", `field "ids[1]" is null`},
		{"function: null in a range", `ids-{{range .ids}}{{.}},{{end}}`, `{"ids": [1, null]}`, "", `field "ids[1]" is null`},
		{"function: empty element", `ids-{{index .ids 0}}`, `{"ids": [""]}`, "", `field "ids[0]" is empty or only white space`},
		{"function: escaped object", `k-{{urlquery .a}}`, `{"a": {"b": 1}}`, "", `field "a" is an object, not a value`},
		{"function: the whole payload", `k-{{.}}`, `{"a": 1}`, "", `field "." is an object, not a value`},
		{"function: one of two empty fields", `k-{{if eq .b ""}}{{.a}}{{end}}`, `{"a": "", "b": "", "c": ""}`, "",
			`key template "k-{{if eq .b \"\"}}{{.a}}{{end}}": one of the fields "a", "b" is empty or only white space`},
		{"function: a member named Format", `k-{{index . "Format"}}`, `{"Format": "x"}`, "k-x", ""},
		{"function: Format is no field", `k-{{print .Format}}`, `{"Format": "x"}`, "",
			`key template "k-{{print .Format}}": template: key:1:10: executing "key" at <.Format>: wrong number of args for Format: want 2 got 0`},
		{"function: control character", printf, `{"user_id": "a\u0000b"}`, "",
			`lock: invalid key: field "user_id" holds control character U+0000`},
		{"function: duplicate", printf, `{"user_id": 1, "user_id": ""}`, "",
			`field "user_id" is ambiguous: the payload has it twice, and a handler may read either`},
		{"function: duplicate, upper case", printf, `{"user_id": 1, "USER_ID": 2}`, "",
			`field "user_id" is ambiguous: the payload has it as both "user_id" and "USER_ID", and a handler may read either`},
		{"function: duplicate, long s", printf, `{"uſer_id": 1, "user_id": 2}`, "",
			`field "user_id" is ambiguous: the payload has it as both "uſer_id" and "user_id", and a handler may read either`},
		{"function: duplicate under a range", `k-{{range $k, $v := .m}}{{$k}}={{$v}},{{end}}`, `{"m": {"a": 1, "A": 2}}`, "",
			`field "m.a" is ambiguous: the payload has it as both "a" and "A", and a handler may read either`},
		{"function: duplicates of unused fields", printf, `{"user_id": 1, "x": 1, "x": 2, "y": {"a": 1, "A": 2}}`, "u-1", ""},
		{"function: null field", printf, `{"user_id": null}`, "",
			`key template "u-{{printf \"%v\" .user_id}}": template: key:1:16: executing "key" at <.user_id>: map has no entry for key "user_id"`},
		{"function: missing key of index", `k-{{index . "user_id"}}`, `{}`, "",
			`key template "k-{{index . \"user_id\"}}": template: key:1:4: executing "key" at <index . "user_id">: error calling index: map has no entry for key "user_id"`},
		{"function: not JSON", printf, `{"user_id": 1`, "", "payload is not JSON: unexpected EOF"},
		{"function: not an object", printf, `"x"`, "", "payload is not a JSON object"},
		{"function: trailing data", printf, `{"user_id": 1} x`, "", "payload is not JSON: data after the object"},
		{"function: huge exponent", printf, `{"user_id": 1, "x": [1e99999]}`, "", `field "x[0]": number 1e99999 is out of range for a key`},
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

// FuzzKeyTemplate checks both template renderers, the one that reads
// fields straight from the payload's bytes and text/template over the
// decoded payload, against a reference built on encoding/json's token
// stream and math/big: each accepts the payloads the reference accepts,
// refuses the others, and renders the reference's key. The simple
// renderer's errors name the field at fault.
func FuzzKeyTemplate(f *testing.F) {
	simple, err := middleware.KeyTemplate("k-{{.a}}-{{.b.c}}-{{._type}}")
	require.NoError(f, err)
	general, err := middleware.KeyTemplate("k-{{print .a}}-{{.b.c}}-{{._type}}")
	require.NoError(f, err)
	for _, seed := range []string{`{"a":1,"b":{"c":"x"}}`, `{"a":4.2e1,"b":{"c":true}}`, `{"a":"é","b":{"c":-0.50}}`,
		`{"a":{"b":[1,2]}}`, `nope`, `{"a":null,"b":{"c":1}}`, `{"a":"","b":{"c":1}}`, `{"\u0061":1,"b":{"c":1}}`,
		`{"a":1e400,"b":{"c":1}}`, `{"a":"\ud800","b":{"c":1}}`, `{"a":1,"a":2,"b":{"c":0}}`,
		`{"a":1,"A":2,"b":{"c":0}}`, `{"a":1,"b":{"c":0,"\u0043":1}}`, `{"a":1,"b":{"c":0},"B":{}}`,
		`{"a":" ","b":{"c":1}}`, `{"a":"\u3000","b":{"c":1}}`, `{"a":"x\u0000","b":{"c":1}}`, "{\"a\":\"\x7f\",\"b\":{\"c\":1}}",
		`{"a":1,"b":{"c":"\u0085"}}`, `{"a":1,"b":{"c":1},"x":{"b":1,"B":2}}`, `{"a":1,"b":{"c":1},"x":[1e99999]}`,
		`{"a":1,"b":{"c":1},"_type":1,"_TYPE":2}`, `{"a":9007199254740993,"b":{"c":[1]}}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		for _, r := range []struct {
			name string
			key  middleware.KeyFunc
			text bool
		}{{"simple", simple, false}, {"text/template", general, true}} {
			got, err := r.key(context.Background(), asynq.NewTask("t", payload))
			want, field, ok := referenceKey(payload, r.text)
			if !ok {
				require.Error(t, err, "%s: rendered %q where the reference refuses", r.name, got)
				if field != "" && !r.text {
					assert.Contains(t, err.Error(), strconv.Quote(field), r.name)
				}
				continue
			}
			require.NoError(t, err, r.name)
			assert.Equal(t, want, got, r.name)
		}
	})
}

// referenceKey renders "k-{{.a}}-{{.b.c}}-t" the slow, obvious way; field
// is the field a refusal must name, if it is about one. With text (the
// text/template renderer), it also refuses a payload in which any object
// holds two members that fold to a name the template uses, or a number no
// key could hold, and values holding the mark of a value that cannot be
// part of a key.
func referenceKey(payload []byte, text bool) (key, field string, ok bool) {
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
	if text && (referenceAmbiguous(v, "a", "b", "c", "_type") || referenceBadNumber(v)) {
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
	if text && (strings.Contains(as, "JOBLOCKxBADxVALUEx") || strings.Contains(cs, "JOBLOCKxBADxVALUEx")) {
		return "", "", false
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

// referenceAmbiguous reports whether an object anywhere in v has two
// members whose names equal one of names under case folding.
func referenceAmbiguous(v any, names ...string) bool {
	switch v := v.(type) {
	case referenceObject:
		for i, m := range v {
			for _, n := range v[i+1:] {
				if strings.EqualFold(m.name, n.name) && slices.ContainsFunc(names, func(s string) bool { return strings.EqualFold(s, m.name) }) {
					return true
				}
			}
			if referenceAmbiguous(m.value, names...) {
				return true
			}
		}
	case referenceArray:
		return slices.ContainsFunc(v, func(e any) bool { return referenceAmbiguous(e, names...) })
	}
	return false
}

// referenceBadNumber reports whether v holds a number no key could hold.
func referenceBadNumber(v any) bool {
	switch v := v.(type) {
	case referenceObject:
		return slices.ContainsFunc(v, func(m referenceMember) bool { return referenceBadNumber(m.value) })
	case referenceArray:
		return slices.ContainsFunc(v, referenceBadNumber)
	case json.Number:
		_, ok := referenceNumber(string(v))
		return !ok
	}
	return false
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
		// The fewest decimals that hold the value exactly (FloatString
		// rounds: 1.11 with one decimal is 1.1).
		for digits := 1; digits <= lock.MaxKeyLen; digits++ {
			s = r.FloatString(digits)
			if back, _ := new(big.Rat).SetString(s); back.Cmp(r) == 0 {
				break
			}
		}
	}
	return s, len(s) <= lock.MaxKeyLen
}

// TestUniqueKeyTooLong: a key that fits, but whose unique key (the
// prefix, "unique:", the queue, the key, and "#enqueue" for enqueuers)
// does not, fails the task without retries, at enqueue time and in the
// worker, naming the task type and the unique key.
func TestUniqueKeyTooLong(t *testing.T) {
	rule := middleware.Rule{Template: "export-{{.id}}", Unique: middleware.UniqueUntilExecuted}
	srv := redistest.New(t)
	c, err := middleware.NewClient(srv.Client(t), newFileLocker(t), middleware.WithDefaultRule(rule))
	require.NoError(t, err)
	_, err = c.Enqueue(asynq.NewTask("export:user", []byte(`{"id":1e1000}`)))
	require.ErrorIs(t, err, lock.ErrInvalidKey)
	assert.EqualError(t, err, `middleware: task "export:user": lock: invalid key: its unique key is too long: `+
		`"asynq:unique:default:", the key and "#enqueue" make 1037 bytes, the limit is 1024`)

	for _, mode := range []middleware.Uniqueness{middleware.UniqueUntilExecuting, middleware.UniqueUntilExecuted, middleware.UniqueUntilAndWhileExecuting} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newHarness(t, newFileLocker(t), middleware.Rule{Template: "export-{{.id}}", Unique: mode}, nil)
			err := h.run(`{"id":1e1010}`)
			require.ErrorIs(t, err, asynq.SkipRetry)
			assert.EqualError(t, err, `middleware: task "job": lock: invalid key: its unique key is too long: `+
				`"t:unique::", the key and "#enqueue" make 1036 bytes, the limit is 1024: skip retry for the task`)
			assert.Zero(t, h.calls)
		})
	}
}
