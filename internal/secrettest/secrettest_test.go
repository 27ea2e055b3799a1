package secrettest

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestParts(t *testing.T) {
	tests := []struct {
		give string
		want []string
	}{
		{"Tr0ub4dor&3#", []string{"Tr0ub4dor&3#", "Tr0ub4dor%263%23", "Tr0ub4dor&3%23", "Tr0ub4dor"}},
		{"pw/ABCD%zz@x y", []string{"pw/ABCD%zz@x y", "pw%2FABCD%25zz%40x+y", "pw%2FABCD%25zz@x%20y", "ABCD"}},
		{"abc", []string{"abc", "abc", "abc"}},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, Parts(tt.give), tt.give)
	}
}

// recorder counts failures instead of failing the test.
type recorder struct{ failures int }

func (r *recorder) Helper()               {}
func (r *recorder) Errorf(string, ...any) { r.failures++ }

func TestAssertNone(t *testing.T) {
	assert.True(t, AssertNone(t, "clean", "invalid port after host", "Tr0ub4dor&3#"))
	var r recorder
	assert.False(t, AssertNone(&r, "leaky", `invalid port ":Tr0ub4dor&3" after host`, "Tr0ub4dor&3#"))
	assert.Equal(t, 1, r.failures, "the run Tr0ub4dor, not the whole password")
}
