// Package clientip resolves a request's client address once, by one set of rules for every
// frontend: the socket's address; behind a trusted proxy, the last address of the configured
// real-IP header; and, only with allow_ip_spoofing, the addresses a client claims for itself
// (BEP 7's ip, ipv4 and ipv6 parameters over HTTP, the IP field over UDP). The rate limiter
// keys on the address it returns, and the peer is stored under it.
package clientip

import (
	"net/netip"
	"strings"

	"github.com/chihaya/chihaya/config"
	"github.com/chihaya/chihaya/tracker/models"
)

// Resolver applies the address rules of one configuration. It is read-only after New and safe
// for concurrent use.
type Resolver struct {
	allowSpoofing bool
	trusted       []netip.Prefix
}

// New returns the Resolver of cfg's allow_ip_spoofing and trusted_proxies.
func New(cfg *config.Config) (*Resolver, error) {
	trusted, err := cfg.TrustedProxyPrefixes()
	if err != nil {
		return nil, err
	}
	return &Resolver{allowSpoofing: cfg.AllowIPSpoofing, trusted: trusted}, nil
}

// Remote returns the client's address: socket, unmapped and without a zone, unless socket is
// a trusted proxy's and the request carries the real-IP header (hasHeader), in which case it is
// the last address of header's last comma-separated value, the one that proxy added. A header
// that does not hold an address is models.ErrInvalidIP.
func (r *Resolver) Remote(socket netip.Addr, header string, hasHeader bool) (netip.Addr, error) {
	socket = socket.Unmap().WithZone("")
	if !hasHeader || !r.TrustedProxy(socket) {
		return socket, nil
	}
	if i := strings.LastIndexByte(header, ','); i >= 0 {
		header = header[i+1:]
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(header))
	if err != nil {
		return netip.Addr{}, models.ErrInvalidIP
	}
	return addr.Unmap().WithZone(""), nil
}

// TrustedProxy reports whether a is one of trusted_proxies.
func (r *Resolver) TrustedProxy(a netip.Addr) bool {
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Spoofing reports whether clients may name their own addresses (allow_ip_spoofing); when it
// is off, Claim ignores what they name, and a frontend need not parse it.
func (r *Resolver) Spoofing() bool { return r.allowSpoofing }

// Begin sets a's Remote to remote and its Endpoint to remote with the announced port, and
// clears Other.
func Begin(a *models.Announce, remote netip.Addr) {
	a.Remote = remote
	a.Endpoint = netip.AddrPortFrom(remote, a.Endpoint.Port())
	a.Other = netip.AddrPort{}
}

// Claim applies an endpoint the client named for itself, after Begin. Without
// allow_ip_spoofing it does nothing. An endpoint of the requester's own address family
// replaces the Endpoint; one of the other family becomes the peer's second entry (Other), as
// BEP 7 has a dual-stacked client name its other address.
func (r *Resolver) Claim(a *models.Announce, claimed netip.AddrPort) {
	if !r.allowSpoofing || !claimed.IsValid() {
		return
	}
	claimed = netip.AddrPortFrom(claimed.Addr().Unmap().WithZone(""), claimed.Port())
	if models.FamilyOf(claimed.Addr()) == models.FamilyOf(a.Remote) {
		a.Endpoint = claimed
	} else {
		a.Other = claimed
	}
}
