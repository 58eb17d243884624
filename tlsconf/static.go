package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// certSet is one generation of static and self-signed certificates. It is
// never changed after it is built; Reload builds a new one.
type certSet struct {
	certs  []*tls.Certificate            // configuration order, self-signed last
	byName map[string][]*tls.Certificate // normalized DNS SAN, maybe "*.example.com"
	def    *tls.Certificate              // certs[0], or nil
}

// loadStatic reads every file in m.files and adds the self-signed
// certificates. It fails on the first file that does not load.
func (m *Manager) loadStatic() (*certSet, error) {
	set := &certSet{byName: make(map[string][]*tls.Certificate)}
	for _, f := range m.files {
		c, err := loadKeyPair(f)
		if err != nil {
			return nil, err
		}
		now := time.Now()
		if now.After(c.Leaf.NotAfter) || now.Before(c.Leaf.NotBefore) {
			m.log.Warn("tls certificate is outside its validity period",
				"file", f.CertFile, "not_before", c.Leaf.NotBefore, "not_after", c.Leaf.NotAfter)
		}
		set.add(c)
	}
	for _, c := range m.selfSigned {
		set.add(c)
	}
	if len(set.certs) > 0 {
		set.def = set.certs[0]
	}
	return set, nil
}

func (s *certSet) add(c *tls.Certificate) {
	s.certs = append(s.certs, c)
	for _, name := range dnsNames(c.Leaf) {
		s.byName[name] = append(s.byName[name], c)
	}
}

// match returns the certificate for the normalized SNI name, or nil.
func (s *certSet) match(hello *tls.ClientHelloInfo, name string) *tls.Certificate {
	if c := pick(hello, s.byName[name]); c != nil {
		return c
	}
	// RFC 6125 §6.4.3: a wildcard stands for exactly one label, the leftmost.
	if i := strings.IndexByte(name, '.'); i > 0 {
		return pick(hello, s.byName["*"+name[i:]])
	}
	return nil
}

// pick prefers the first certificate the client can use (for example ECDSA
// against RSA), else the first one.
func pick(hello *tls.ClientHelloInfo, certs []*tls.Certificate) *tls.Certificate {
	for _, c := range certs {
		if hello.SupportsCertificate(c) == nil {
			return c
		}
	}
	if len(certs) > 0 {
		return certs[0]
	}
	return nil
}

// loadKeyPair reads a PEM chain and its key. Errors name the file at fault.
func loadKeyPair(f CertFile) (*tls.Certificate, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, fmt.Errorf("tlsconf: certificate %q / key %q: both files must be set", f.CertFile, f.KeyFile)
	}
	certPEM, err := os.ReadFile(f.CertFile)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: read key: %w", err)
	}
	if _, err := parseCertsPEM(certPEM); err != nil {
		return nil, fmt.Errorf("tlsconf: certificate %s: %w", f.CertFile, err)
	}
	// The chain parses, so what remains is the key or the pair.
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: key %s (for certificate %s): %w", f.KeyFile, f.CertFile, err)
	}
	return &c, nil
}

// parseCertsPEM parses every CERTIFICATE block; it fails if there is none
// or one does not parse. Other block types are ignored, as in
// tls.X509KeyPair.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d in the file: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return certs, nil
}

// dnsNames returns the leaf's DNS SANs, normalized; the subject common name
// stands in only for a legacy certificate with no SANs at all.
func dnsNames(leaf *x509.Certificate) []string {
	var names []string
	for _, n := range leaf.DNSNames {
		names = append(names, normalizeName(n))
	}
	if len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0 && leaf.Subject.CommonName != "" {
		names = append(names, normalizeName(leaf.Subject.CommonName))
	}
	return names
}

// certNames is dnsNames plus the IP SANs, for NotAfter.
func certNames(leaf *x509.Certificate) []string {
	names := dnsNames(leaf)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

// normalizeName lowercases a DNS name and drops a trailing dot.
func normalizeName(s string) string {
	return strings.ToLower(strings.TrimSuffix(s, "."))
}
