package middleware

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/joblock/joblock/lock"
)

// The functions here read fields out of a payload that json.Valid has
// accepted, without decoding the rest of it.

// member returns the raw value of obj's member named field (the last one,
// as encoding/json decodes duplicates). obj is a valid JSON object.
func member(obj []byte, field string) (raw []byte, found bool) {
	i := skipSpace(obj, 1)
	for i < len(obj) && obj[i] != '}' {
		keyEnd := skipString(obj, i)
		key := obj[i:keyEnd]
		i = skipSpace(obj, skipSpace(obj, keyEnd)+1) // past ':'
		end := skipValue(obj, i)
		if keyIs(key, field) {
			raw, found = obj[i:end], true
		}
		i = skipSpace(obj, end)
		if i < len(obj) && obj[i] == ',' {
			i = skipSpace(obj, i+1)
		}
	}
	return raw, found
}

// keyIs reports whether a quoted JSON object key names field.
func keyIs(quoted []byte, field string) bool {
	inner := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == field
	}
	var s string
	return json.Unmarshal(quoted, &s) == nil && s == field
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
