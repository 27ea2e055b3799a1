package middleware

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/joblock/joblock/lock"
)

// The functions here read fields out of a payload that json.Valid has
// accepted, without decoding the rest of it.

// match is what a lookup of one field found in an object: the value of the
// member named exactly field, and the names of the first two members that
// are field under case folding (exactly or not), as encoding/json matches
// a struct's fields. When there are two, the field is ambiguous: a handler
// may read either.
type match struct {
	raw           []byte
	found         bool
	first, second []byte // quoted names
}

// member looks field up in obj, a valid JSON object.
func member(obj []byte, field string) match {
	var m match
	it := newObjectIter(obj)
	for {
		key, value, ok := it.next()
		if !ok {
			return m
		}
		exact, folded := keyIs(key, field)
		switch {
		case !folded:
			continue
		case m.first == nil:
			m.first = key
		case m.second == nil:
			m.second = key
		}
		if exact {
			m.raw, m.found = value, true
		}
	}
}

// keyIs reports whether a quoted JSON object key names field exactly, and
// whether it does under Unicode case folding (strings.EqualFold).
func keyIs(quoted []byte, field string) (exact, folded bool) {
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		if string(inner) == field {
			return true, true
		}
		return false, foldEqual(inner, field)
	}
	var s string
	if json.Unmarshal(quoted, &s) != nil {
		return false, false
	}
	return s == field, strings.EqualFold(s, field)
}

// foldEqual is strings.EqualFold for a byte slice, without converting it.
func foldEqual(b []byte, s string) bool {
	for len(b) > 0 && len(s) > 0 {
		if b[0] < utf8.RuneSelf && s[0] < utf8.RuneSelf {
			if lowerASCII(b[0]) != lowerASCII(s[0]) {
				return false
			}
			b, s = b[1:], s[1:]
			continue
		}
		r, n := utf8.DecodeRune(b)
		q, m := utf8.DecodeRuneInString(s)
		if r != q && !sameFold(r, q) {
			return false
		}
		b, s = b[n:], s[m:]
	}
	return len(b) == 0 && len(s) == 0
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// sameFold reports whether r and q fold to each other.
func sameFold(r, q rune) bool {
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f == q {
			return true
		}
	}
	return false
}

// foldName returns s with each rune replaced by the smallest rune it folds
// to: foldName(a) == foldName(b) exactly when strings.EqualFold(a, b).
func foldName(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

// objectIter walks the members of a valid JSON object.
type objectIter struct {
	obj []byte
	i   int
}

func newObjectIter(obj []byte) objectIter { return objectIter{obj: obj, i: skipSpace(obj, 1)} }

// next returns the next member's quoted name and raw value; ok is false
// past the last one.
func (it *objectIter) next() (key, value []byte, ok bool) {
	obj, i := it.obj, it.i
	if i >= len(obj) || obj[i] == '}' {
		return nil, nil, false
	}
	keyEnd := skipString(obj, i)
	key = obj[i:keyEnd]
	i = skipSpace(obj, skipSpace(obj, keyEnd)+1) // past ':'
	end := skipValue(obj, i)
	it.i = skipComma(obj, end)
	return key, obj[i:end], true
}

// arrayIter walks the elements of a valid JSON array.
type arrayIter struct {
	arr []byte
	i   int
}

func newArrayIter(arr []byte) arrayIter { return arrayIter{arr: arr, i: skipSpace(arr, 1)} }

// next returns the next raw element; ok is false past the last one.
func (it *arrayIter) next() (value []byte, ok bool) {
	arr, i := it.arr, it.i
	if i >= len(arr) || arr[i] == ']' {
		return nil, false
	}
	end := skipValue(arr, i)
	it.i = skipComma(arr, end)
	return arr[i:end], true
}

// skipComma returns the index of what follows the value that ends at
// b[i], past the comma after it if there is one.
func skipComma(b []byte, i int) int {
	i = skipSpace(b, i)
	if i < len(b) && b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	return i
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string that starts at b[i].
func skipString(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(b)
}

// skipValue returns the index after the value that starts at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				j = skipString(b, j) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1
				}
			}
		}
		return len(b)
	}
	j := i
	for j < len(b) && strings.IndexByte("+-0123456789.eEtruefalsn", b[j]) >= 0 {
		j++
	}
	return j
}

// canonicalNumber renders a JSON number literal in one form for every way
// of writing the same value: integers without fraction or exponent (42.0
// and 4.2e1 are 42), other values as plain decimals without trailing zeros
// (0.50 is 0.5), never through floating point, so big integers stay exact.
// A value whose rendering would not fit in a key is an error.
func canonicalNumber(lit []byte) (string, error) {
	if plainInt(lit) {
		if string(lit) == "-0" {
			return "0", nil
		}
		return string(lit), nil
	}
	tooBig := fmt.Errorf("number %.40s is out of range for a key", lit)
	neg := lit[0] == '-'
	s := lit
	if neg {
		s = s[1:]
	}
	mant, expPart, _ := bytes.Cut(bytes.ToLower(s), []byte("e"))
	intPart, frac, _ := bytes.Cut(mant, []byte("."))
	// The value is digits × 10^exp, digits an integer without leading or
	// trailing zeros.
	digits := bytes.TrimLeft(append(append([]byte(nil), intPart...), frac...), "0")
	if len(digits) == 0 {
		return "0", nil
	}
	exp := 0
	if len(expPart) > 0 {
		e, err := strconv.Atoi(string(expPart))
		if err != nil || e >= 1e6 || e <= -1e6 {
			return "", tooBig
		}
		exp = e
	}
	exp -= len(frac)
	for digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
		exp++
	}
	point := len(digits) + exp
	size := len(digits) + 1 // with a point inside
	switch {
	case exp >= 0:
		size = len(digits) + exp
	case point <= 0:
		size = 2 - point + len(digits)
	}
	if neg {
		size++
	}
	if size > lock.MaxKeyLen {
		return "", tooBig
	}
	out := make([]byte, 0, size)
	if neg {
		out = append(out, '-')
	}
	switch {
	case exp >= 0:
		out = append(append(out, digits...), bytes.Repeat([]byte("0"), exp)...)
	case point > 0:
		out = append(append(append(out, digits[:point]...), '.'), digits[point:]...)
	default:
		out = append(append(append(out, "0."...), bytes.Repeat([]byte("0"), -point)...), digits...)
	}
	return string(out), nil
}

// plainInt reports whether lit is a JSON integer without fraction or
// exponent, which is already canonical (but for -0).
func plainInt(lit []byte) bool {
	s := lit
	if len(s) > 0 && s[0] == '-' {
		s = s[1:]
	}
	if len(s) == 0 || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
