package models

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPeerIDAdmitted(t *testing.T) {
	var id PeerID
	copy(id[:], "-TR4050-abcdefghijkl")
	tests := []struct {
		name      string
		whitelist []string
		want      bool
	}{
		{name: "empty whitelist admits everyone", whitelist: nil, want: true},
		{name: "matching prefix", whitelist: []string{"-qB", "-TR"}, want: true},
		{name: "longer matching prefix", whitelist: []string{"-TR4050-"}, want: true},
		{name: "the whole peer ID", whitelist: []string{"-TR4050-abcdefghijkl"}, want: true},
		{name: "no prefix matches", whitelist: []string{"-qB", "-UT"}, want: false},
		{name: "prefix longer than a peer ID", whitelist: []string{"-TR4050-abcdefghijklm"}, want: false},
		{name: "a prefix in the middle does not count", whitelist: []string{"TR4050"}, want: false},
		{name: "case matters", whitelist: []string{"-tr"}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var list [][]byte
			for _, p := range tt.whitelist {
				list = append(list, []byte(p))
			}
			assert.Equal(t, tt.want, id.Admitted(list))
		})
	}
}
