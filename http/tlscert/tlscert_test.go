package tlscert_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/chihaya/chihaya/http/tlscert"
	"github.com/chihaya/chihaya/http/tlscert/tlscerttest"
)

func TestLoadErrorsNameTheFile(t *testing.T) {
	ca := tlscerttest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.IssueFiles(t, dir, 2)
	_, otherKey := ca.Issue(t, 3)
	garbage := filepath.Join(dir, "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not a PEM file\n"), 0o600))
	wrongKey := filepath.Join(dir, "wrong-key.pem")
	require.NoError(t, os.WriteFile(wrongKey, otherKey, 0o600))
	keyAsCert := keyFile // a key where the chain should be

	tests := []struct {
		name      string
		cert, key string
		want      []string
	}{
		{"missing cert", filepath.Join(dir, "nope.pem"), keyFile, []string{"tls_cert_file", "nope.pem"}},
		{"missing key", certFile, filepath.Join(dir, "nokey.pem"), []string{"tls_key_file", "nokey.pem"}},
		{"garbage cert", garbage, keyFile, []string{"tls_cert_file", garbage}},
		{"key as cert", keyAsCert, keyFile, []string{"tls_cert_file", keyAsCert}},
		{"garbage key", certFile, garbage, []string{"tls_key_file", garbage}},
		{"key of another certificate", certFile, wrongKey, []string{"tls_key_file", wrongKey, certFile}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tlscert.Load(tc.cert, tc.key)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
	}
}

func TestLoadServesTheWholeChain(t *testing.T) {
	ca := tlscerttest.NewCA(t)
	certFile, keyFile := ca.IssueFiles(t, t.TempDir(), 7)
	s, err := tlscert.Load(certFile, keyFile)
	require.NoError(t, err)
	c, err := s.GetCertificate(nil)
	require.NoError(t, err)
	assert.Len(t, c.Certificate, 2, "leaf and CA")
	assert.Equal(t, int64(7), s.Leaf().SerialNumber.Int64())
	cfg := s.Config()
	assert.Equal(t, []string{"http/1.1"}, cfg.NextProtos)
	assert.False(t, cfg.SessionTicketsDisabled)
}

func TestReloadKeepsTheOldOnABadPair(t *testing.T) {
	ca := tlscerttest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.IssueFiles(t, dir, 10)
	s, err := tlscert.Load(certFile, keyFile)
	require.NoError(t, err)

	tlscerttest.WriteAtomic(t, certFile, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	_, err = s.Reload()
	require.Error(t, err)
	assert.Contains(t, err.Error(), certFile)
	assert.Equal(t, int64(10), s.Leaf().SerialNumber.Int64(), "the old pair stays")

	ca.IssueFiles(t, dir, 11)
	leaf, err := s.Reload()
	require.NoError(t, err)
	assert.Equal(t, int64(11), leaf.SerialNumber.Int64())
	assert.Equal(t, int64(11), s.Leaf().SerialNumber.Int64())
}

func TestWatchFollowsRenewals(t *testing.T) {
	ca := tlscerttest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.IssueFiles(t, dir, 20)
	s, err := tlscert.Load(certFile, keyFile)
	require.NoError(t, err)

	var mu sync.Mutex
	var reloads []int64
	var failures int
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, s.Watch(ctx, func(leaf *x509.Certificate, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failures++
			return
		}
		reloads = append(reloads, leaf.SerialNumber.Int64())
	}))
	ca.IssueFiles(t, dir, 21)
	require.Eventually(t, func() bool { return s.Leaf().SerialNumber.Int64() == 21 }, 5*time.Second, 10*time.Millisecond)

	// A broken renewal is refused and the pair in service stays.
	require.NoError(t, os.WriteFile(certFile, []byte("garbage"), 0o600))
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return failures > 0 }, 5*time.Second, 10*time.Millisecond)
	assert.Equal(t, int64(21), s.Leaf().SerialNumber.Int64())
	mu.Lock()
	assert.Equal(t, []int64{21}, reloads)
	mu.Unlock()
}
