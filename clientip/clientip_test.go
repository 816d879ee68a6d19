package clientip

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker/models"
)

func resolver(t *testing.T, spoofing bool, trusted ...string) *Resolver {
	t.Helper()
	cfg := config.Default()
	cfg.AllowIPSpoofing = spoofing
	cfg.TrustedProxies = trusted
	if len(trusted) > 0 {
		cfg.RealIPHeader = "X-Real-IP"
	}
	r, err := New(&cfg)
	require.NoError(t, err)
	return r
}

func TestRemote(t *testing.T) {
	r := resolver(t, false, "10.0.0.0/8", "::1/128")
	for _, tc := range []struct {
		name, socket, header string
		hasHeader            bool
		want                 string
		err                  error
	}{
		{"socket without header", "192.0.2.1", "", false, "192.0.2.1", nil},
		{"IPv4-mapped socket", "::ffff:192.0.2.1", "", false, "192.0.2.1", nil},
		{"zone dropped", "fe80::1%eth0", "", false, "fe80::1", nil},
		{"header from an untrusted socket is ignored", "192.0.2.1", "198.51.100.9", true, "192.0.2.1", nil},
		{"header from a trusted proxy", "10.1.2.3", "198.51.100.9", true, "198.51.100.9", nil},
		{"the last address of a list", "10.1.2.3", "203.0.113.1, 198.51.100.9", true, "198.51.100.9", nil},
		{"IPv6 behind an IPv6 proxy", "::1", "2001:db8::5", true, "2001:db8::5", nil},
		{"mapped address in the header", "10.1.2.3", "::ffff:198.51.100.9", true, "198.51.100.9", nil},
		{"trusted proxy without the header", "10.1.2.3", "", false, "10.1.2.3", nil},
		{"garbage in the header", "10.1.2.3", "not an address", true, "", models.ErrInvalidIP},
		{"empty header", "10.1.2.3", "", true, "", models.ErrInvalidIP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := r.Remote(netip.MustParseAddr(tc.socket), tc.header, tc.hasHeader)
			if tc.err != nil {
				assert.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, netip.MustParseAddr(tc.want), got)
		})
	}
}

func TestClaim(t *testing.T) {
	for _, tc := range []struct {
		name            string
		spoofing        bool
		remote          string
		claims          []string
		endpoint, other string
	}{
		{"no spoofing: claims ignored", false, "192.0.2.1", []string{"198.51.100.1:7000", "[2001:db8::1]:7000"}, "192.0.2.1:6881", ""},
		{"same family replaces the endpoint", true, "192.0.2.1", []string{"198.51.100.1:7000"}, "198.51.100.1:7000", ""},
		{"other family is the second entry", true, "192.0.2.1", []string{"[2001:db8::1]:7000"}, "192.0.2.1:6881", "[2001:db8::1]:7000"},
		{"IPv4 claim over IPv6 (the UDP IP field)", true, "2001:db8::9", []string{"198.51.100.1:6881"}, "[2001:db8::9]:6881", "198.51.100.1:6881"},
		{"mapped claim is IPv4", true, "192.0.2.1", []string{"[::ffff:198.51.100.1]:7000"}, "198.51.100.1:7000", ""},
		{"both families", true, "192.0.2.1", []string{"198.51.100.1:7000", "[2001:db8::1]:7001"}, "198.51.100.1:7000", "[2001:db8::1]:7001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := resolver(t, tc.spoofing)
			assert.Equal(t, tc.spoofing, r.Spoofing())
			a := &models.Announce{Endpoint: netip.AddrPortFrom(netip.Addr{}, 6881), Other: netip.MustParseAddrPort("203.0.113.9:1")}
			Begin(a, netip.MustParseAddr(tc.remote))
			assert.Equal(t, netip.MustParseAddr(tc.remote), a.Remote)
			assert.False(t, a.Other.IsValid(), "Begin clears Other")
			for _, c := range tc.claims {
				r.Claim(a, netip.MustParseAddrPort(c))
			}
			assert.Equal(t, netip.MustParseAddrPort(tc.endpoint), a.Endpoint)
			if tc.other == "" {
				assert.False(t, a.Other.IsValid())
			} else {
				assert.Equal(t, netip.MustParseAddrPort(tc.other), a.Other)
			}
		})
	}
}
