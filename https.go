package chihaya

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"strings"

	"github.com/golang/glog"

	"github.com/chihaya/chihaya/http/tlscert"
)

// HTTPS (tls_addr): the certificate is loaded before anything else opens, so that one that
// does not load stops Chihaya at once with the file named; it is read again on SIGHUP (through
// ReloadOperator) and when its files change.

// openCerts loads tls_cert_file and tls_key_file when tls_addr is set.
func (c *Chihaya) openCerts() error {
	if c.cfg.TLSAddr == "" {
		return nil
	}
	certs, err := tlscert.Load(c.cfg.TLSCertFile, c.cfg.TLSKeyFile)
	if err != nil {
		return fmt.Errorf("tls_addr %s: %w", c.cfg.TLSAddr, err)
	}
	c.certs = certs
	logCert("loaded", certs, certs.Leaf(), nil)
	return nil
}

// listenTLS opens the HTTPS listener (taking it over from the process it replaces in an
// upgrade).
func (c *Chihaya) listenTLS(lis listeners) error {
	if c.certs == nil {
		return nil
	}
	ln, err := lis.tcp(c.cfg.TLSAddr)
	if err != nil {
		return fmt.Errorf("listen on tls_addr %s: %w", c.cfg.TLSAddr, err)
	}
	c.tlsLn = ln
	return nil
}

// serveTLS serves the HTTPS listener, when there is one, until Close.
func (c *Chihaya) serveTLS() {
	if c.tlsLn == nil {
		return
	}
	cfg := c.certs.Config()
	c.goRun(func() {
		if err := c.http.ServeTLS(c.tlsLn, cfg); err != nil {
			c.errc <- err
		}
	})
}

// watchCerts reads the certificate again whenever its files change, until ctx ends.
func (c *Chihaya) watchCerts(ctx context.Context) {
	if c.certs == nil {
		return
	}
	err := c.certs.Watch(ctx, func(leaf *x509.Certificate, err error) { logCert("changed on disk", c.certs, leaf, err) })
	if err != nil {
		glog.Warningf("chihaya: %v; the certificate is read again only on SIGHUP and POST /admin/reload", err)
	}
}

// reloadCerts reads the certificate again (SIGHUP, POST /admin/reload); a pair that does not
// load is logged and the one in service stays.
func (c *Chihaya) reloadCerts() (map[string]any, error) {
	if c.certs == nil {
		return nil, nil
	}
	leaf, err := c.certs.Reload()
	logCert("reloaded", c.certs, leaf, err)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return map[string]any{"serial": leaf.SerialNumber.String(), "not_after": leaf.NotAfter}, nil
}

func logCert(what string, s *tlscert.Store, leaf *x509.Certificate, err error) {
	certFile, _ := s.Files()
	if err != nil {
		glog.Errorf("chihaya: certificate %s: %v (the certificate in service stays)", what, err)
		return
	}
	glog.Infof("chihaya: certificate %s %s: subject %q, serial %s, valid until %s",
		certFile, what, leaf.Subject.String(), leaf.SerialNumber.String(), leaf.NotAfter.UTC().Format("2006-01-02 15:04 MST"))
}

// TLSAddr returns the address the HTTPS frontend listens on, or nil when tls_addr is empty.
func (c *Chihaya) TLSAddr() net.Addr {
	if c.tlsLn == nil {
		return nil
	}
	return c.tlsLn.Addr()
}

// listening names the listeners, for the log line at start.
func (c *Chihaya) listening() string {
	var parts []string
	if a := c.Addr(); a != nil {
		parts = append(parts, "HTTP on "+a.String())
	}
	if a := c.TLSAddr(); a != nil {
		parts = append(parts, "HTTPS on "+a.String())
	}
	if a := c.UDPAddr(); a != nil {
		parts = append(parts, "UDP on "+a.String())
	}
	return strings.Join(parts, ", ")
}
