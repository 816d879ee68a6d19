package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/chihaya/chihaya/bench/loadgen"
)

// HTTPS: Chihaya terminating TLS itself (tls_addr) against what operators of opentracker (and
// Ocelot) run today, nginx terminating TLS in front of it. Both sides run on the tracker CPU:
// the tracker's CPU figures are the sum over its processes (nginx runs as one process,
// master_process off, so that its worker is the process measured).

// Tracker names of the HTTPS workloads.
const (
	chihayaTLS = "chihaya-tls"
	nginxOT    = "nginx+opentracker"
)

// isTLS reports whether tracker t is measured over HTTPS.
func isTLS(t string) bool { return t == chihayaTLS || t == nginxOT }

// writeCert writes a self-signed ECDSA P-256 certificate for 127.0.0.1 and its key into dir,
// as a renewal by an ACME client would leave them; the generator does not verify it.
func writeCert(dir string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// nginxConf is nginx terminating TLS on listen and passing every request to opentracker at
// upstream with the client's address in X-Forwarded-For: one process, no access log, TLS 1.2
// and 1.3, session tickets and a session cache on, keep-alive towards the client.
func nginxConf(dir, base, listen, upstream, certFile, keyFile string) string {
	return fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[2]s.pid;
error_log %[2]s.error.log warn;
events { worker_connections 8192; }
http {
	access_log off;
	client_body_temp_path %[1]s/nginx-body;
	proxy_temp_path %[1]s/nginx-proxy;
	fastcgi_temp_path %[1]s/nginx-fastcgi;
	uwsgi_temp_path %[1]s/nginx-uwsgi;
	scgi_temp_path %[1]s/nginx-scgi;
	keepalive_requests 1000000;
	server {
		listen %[3]s ssl;
		ssl_certificate %[5]s;
		ssl_certificate_key %[6]s;
		ssl_protocols TLSv1.2 TLSv1.3;
		ssl_session_tickets on;
		ssl_session_cache shared:SSL:10m;
		location / {
			proxy_pass http://%[4]s;
			proxy_set_header X-Forwarded-For $remote_addr;
			proxy_buffering on;
		}
	}
}
`, dir, base, listen, upstream, certFile, keyFile)
}

// probeTLS is probe over TLS.
func probeTLS(addr string, req []byte, rr *loadgen.ResponseReader) error {
	d := &net.Dialer{Timeout: time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return err
	}
	return probeOn(c, req, rr)
}
