package tracker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/chihaya/chihaya/tracker/models"
)

// SiteStore is an optional capability of a Conn that private mode needs: the site's users,
// registered torrents, freeleech tokens, client whitelist and deletion reasons, kept where the
// swarms are so that every Chihaya instance sharing a driver sees the same. Registered
// torrents live in the swarm storage itself: Announce with Create false finds them there and
// reports their site ID, freeleech type and whether the announcing user holds a token.
type SiteStore interface {
	// User returns the user whose passkey is passkey, or models.ErrPasskeyNotFound.
	User(ctx context.Context, passkey string) (models.User, error)
	// Whitelisted reports whether peerID starts with one of the whitelist's prefixes; an
	// empty whitelist allows every client.
	Whitelisted(ctx context.Context, peerID models.PeerID) (bool, error)
	// DeletionReason returns why the torrent was deleted and when, if that is remembered.
	DeletionReason(ctx context.Context, ih models.InfoHash) (reason string, at time.Time, ok bool, err error)
	// ReplaceSite replaces users, registered torrents, tokens and the whitelist with a fresh
	// load from the site, and remembers its baselines. Peers of torrents that stay registered
	// are kept; torrents no longer registered are dropped with their peers.
	ReplaceSite(ctx context.Context, s *models.SiteState) error
	// UpdateSite applies one change from the site (Gazelle's update API).
	UpdateSite(ctx context.Context, u *models.SiteUpdate) error
	// UserPeers counts the user's leeching and seeding peers.
	UserPeers(ctx context.Context, userID uint64) (leeching, seeding int, err error)
	// Prune forgets deletion reasons recorded before reasonsBefore and the baselines of peers
	// last seen before baselinesBefore.
	Prune(ctx context.Context, reasonsBefore, baselinesBefore time.Time) error
}

// ErrNoSiteStore is returned in private mode when the tracker driver cannot hold site state.
var ErrNoSiteStore = errors.New("tracker: the tracker driver has no site store (private mode)")

// site returns a connection that is also a SiteStore; the caller closes it.
func (t *Tracker) site() (Conn, SiteStore, error) {
	conn, err := t.pool.Get()
	if err != nil {
		return nil, nil, fmt.Errorf("tracker: get conn: %w", err)
	}
	store, ok := conn.(SiteStore)
	if !ok {
		conn.Close()
		return nil, nil, ErrNoSiteStore
	}
	return conn, store, nil
}

// UpdateSite applies one change from the site to the site state.
func (t *Tracker) UpdateSite(ctx context.Context, u *models.SiteUpdate) error {
	conn, store, err := t.site()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := store.UpdateSite(ctx, u); err != nil {
		return fmt.Errorf("tracker: update site: %w", err)
	}
	return nil
}

// ReplaceSite replaces the site state with a fresh load.
func (t *Tracker) ReplaceSite(ctx context.Context, s *models.SiteState) error {
	conn, store, err := t.site()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := store.ReplaceSite(ctx, s); err != nil {
		return fmt.Errorf("tracker: replace site: %w", err)
	}
	return nil
}

// UserPeers returns the user with passkey and the number of its leeching and seeding peers.
func (t *Tracker) UserPeers(ctx context.Context, passkey string) (u models.User, leeching, seeding int, err error) {
	conn, store, err := t.site()
	if err != nil {
		return u, 0, 0, err
	}
	defer conn.Close()
	if u, err = store.User(ctx, passkey); err != nil {
		return u, 0, 0, err
	}
	leeching, seeding, err = store.UserPeers(ctx, u.ID)
	return u, leeching, seeding, err
}
