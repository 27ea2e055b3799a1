package redistest

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
	"strconv"
	"testing"
	"time"
)

// TLSFiles are PEM files made for one test by a throwaway CA: the CA's
// certificate, and a client certificate with its key.
type TLSFiles struct {
	CA, Cert, Key string
	// ServerCert and ServerKey are the server's, valid for 127.0.0.1 and
	// localhost.
	ServerCert, ServerKey string
}

// WithTLS makes the server speak only TLS on its port, with a certificate
// for 127.0.0.1 from a CA made for the test, and require clients to present
// a certificate from that CA (Server.TLS has the client's files).
func WithTLS() Option {
	return func(s *Server) {
		files, err := newCA(s.dir)
		if err != nil {
			s.err = err
			return
		}
		s.TLS = files
		prev := s.argsFor
		s.argsFor = func(port int, dir string) []string {
			args := prev(port, dir)
			for i := range args {
				if args[i] == "--port" {
					args[i+1] = "0" // no plain-text port
				}
			}
			return append(args, "--tls-port", strconv.Itoa(port), "--tls-cert-file", files.ServerCert,
				"--tls-key-file", files.ServerKey, "--tls-ca-cert-file", files.CA, "--tls-auth-clients", "yes")
		}
	}
}

func (f *TLSFiles) clientConfig() *tls.Config {
	pool := x509.NewCertPool()
	if pem, err := os.ReadFile(f.CA); err == nil {
		pool.AppendCertsFromPEM(pem)
	}
	conf := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert, err := tls.LoadX509KeyPair(f.Cert, f.Key); err == nil {
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf
}

// newCA writes a CA, a server certificate and a client certificate into
// dir.
// NewTLSFiles makes a throwaway CA and its certificates in a directory of
// t's own, for tests that need the files without a server.
func NewTLSFiles(t testing.TB) *TLSFiles {
	t.Helper()
	f, err := newCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func newCA(dir string) (*TLSFiles, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "redistest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	f := &TLSFiles{CA: filepath.Join(dir, "ca.crt")}
	if err := writePEM(f.CA, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) (certFile, keyFile string, err error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return "", "", err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return "", "", err
		}
		certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
			return "", "", err
		}
		return certFile, keyFile, writePEM(keyFile, "PRIVATE KEY", keyDER)
	}
	if f.ServerCert, f.ServerKey, err = leaf(2, "server", x509.ExtKeyUsageServerAuth); err != nil {
		return nil, fmt.Errorf("redistest: server certificate: %w", err)
	}
	if f.Cert, f.Key, err = leaf(3, "client", x509.ExtKeyUsageClientAuth); err != nil {
		return nil, fmt.Errorf("redistest: client certificate: %w", err)
	}
	return f, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
