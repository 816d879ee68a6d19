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

func TestSiteStateByTorrent(t *testing.T) {
	st := SiteState{
		Tokens:    []Token{{UserID: 1, TorrentID: 10}, {UserID: 2, TorrentID: 10}, {UserID: 3, TorrentID: 20}},
		Baselines: []Baseline{{UserID: 1, TorrentID: 20, Uploaded: 5}, {UserID: 4, TorrentID: 30, Uploaded: 7}},
	}
	tokens, baselines := st.ByTorrent()
	assert.Equal(t, map[uint64][]uint32{10: {1, 2}, 20: {3}}, tokens)
	assert.Equal(t, map[uint64][]Baseline{20: {st.Baselines[0]}, 30: {st.Baselines[1]}}, baselines)

	var empty SiteState
	tokens, baselines = empty.ByTorrent()
	assert.Empty(t, tokens)
	assert.Empty(t, baselines)
}
