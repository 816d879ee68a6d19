// Package tlscert keeps the certificate of the HTTPS frontend: it loads a PEM certificate
// chain and its key, hands them to every new TLS handshake, and swaps in a renewed pair
// (SIGHUP, or a change of either file on disk) without touching the connections that are
// open. A pair that does not load is refused and the one in service stays.
package tlscert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"github.com/chihaya/chihaya/filewatch"
)

// Store holds the certificate in service. Its methods are safe for concurrent use.
type Store struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// Load reads the certificate chain in certFile and its private key in keyFile. Its error
// names the file at fault.
func Load(certFile, keyFile string) (*Store, error) {
	s := &Store{certFile: certFile, keyFile: keyFile}
	c, err := s.read()
	if err != nil {
		return nil, err
	}
	s.cur.Store(c)
	return s, nil
}

// Reload reads the files again and puts the new pair in service for the handshakes that
// follow. When the new pair does not load, it returns why and the pair in service stays.
func (s *Store) Reload() (*x509.Certificate, error) {
	c, err := s.read()
	if err != nil {
		return nil, err
	}
	s.cur.Store(c)
	return c.Leaf, nil
}

// Leaf is the parsed first certificate of the chain in service.
func (s *Store) Leaf() *x509.Certificate { return s.cur.Load().Leaf }

// Files are the certificate and key paths, as given to Load.
func (s *Store) Files() (certFile, keyFile string) { return s.certFile, s.keyFile }

// GetCertificate returns the pair in service; it is tls.Config.GetCertificate.
func (s *Store) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cur.Load(), nil
}

// Config returns the server configuration the HTTPS frontend uses: TLS 1.2 and 1.3 with Go's
// default cipher suites, session tickets on (Go rotates their keys itself), ALPN http/1.1, and
// the certificate from s at each handshake.
func (s *Store) Config() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		NextProtos:     []string{"http/1.1"},
		GetCertificate: s.GetCertificate,
	}
}

// read loads and checks the pair, naming the file at fault in its error.
func (s *Store) read() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(s.certFile)
	if err != nil {
		return nil, fmt.Errorf("tls_cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(s.keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls_key_file: %w", err)
	}
	if !hasBlock(certPEM, "CERTIFICATE") {
		return nil, fmt.Errorf("tls_cert_file %s: no PEM CERTIFICATE block", s.certFile)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		msg := err.Error()
		switch {
		case strings.Contains(msg, "key input") || strings.Contains(msg, "private key") && !strings.Contains(msg, "does not match"):
			return nil, fmt.Errorf("tls_key_file %s: %w", s.keyFile, err)
		case strings.Contains(msg, "does not match"):
			return nil, fmt.Errorf("tls_key_file %s does not belong to tls_cert_file %s: %w", s.keyFile, s.certFile, err)
		default:
			return nil, fmt.Errorf("tls_cert_file %s: %w", s.certFile, err)
		}
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls_cert_file %s: %w", s.certFile, err)
		}
	}
	return &c, nil
}

func hasBlock(data []byte, typ string) bool {
	for len(bytes.TrimSpace(data)) > 0 {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if b.Type == typ {
			return true
		}
	}
	return false
}

// Watch reloads the pair whenever either file changes on disk, until ctx ends, and tells done
// of each reload (the new leaf, or why the pair in service stays). Files replaced by a rename
// or a symbolic link switched over (certbot's live/ directory, acme.sh) are followed too (see
// package filewatch). It returns an error only when the watch cannot be set up; the goroutine
// it starts ends with ctx.
func (s *Store) Watch(ctx context.Context, done func(*x509.Certificate, error)) error {
	err := filewatch.Watch(ctx, []string{s.certFile, s.keyFile}, filewatch.Settle,
		func() { done(s.Reload()) },
		func(err error) { done(nil, fmt.Errorf("tls: %w", err)) })
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	return nil
}
