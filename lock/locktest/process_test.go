package locktest

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckHammerLog(t *testing.T) {
	tests := []struct {
		name    string
		give    string
		wantErr string
	}{
		{"clean", `enter 1 10
exit 1 true 10
releasing 1 10
released 1 true 10
enter 2 11
exit 2 true 11
enter 3 10
exit 3 true 10
releasing 2 11
released 2 false 11`, ""},
		{"overlap", `enter 1 10
enter 2 11
exit 1 true 10
exit 2 true 11`, "overlapped by 2"},
		{"late holder may overlap", `enter 1 10
enter 2 11
exit 1 false 10
exit 2 true 11`, ""},
		{"fence backwards", `enter 5 10
exit 5 true 10
enter 4 11
exit 4 true 11`, "fencing token 4 after 5"},
		{"fence reused", `enter 5 10
exit 5 true 10
enter 5 11
exit 5 true 11`, "handed out twice"},
		{"stolen release", `enter 1 10
exit 1 true 10
enter 2 11
releasing 1 10
released 1 true 10
exit 2 true 11`, "release of 1 succeeded after 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CheckHammerLog(tt.give)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
		})
	}
	s, err := CheckHammerLog(tests[0].give)
	require.NoError(t, err)
	assert.Equal(t, HammerSummary{Sections: 3, Abandoned: 1, LateRejected: 1, Processes: 2, MaxFence: 3}, s)
}
