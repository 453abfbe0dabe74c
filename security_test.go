package gridkv_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/feellmoose/gridkv"
	"github.com/feellmoose/gridkv/internal/cluster"
	"github.com/feellmoose/gridkv/transport"
)

// secure returns the Options of a small, quick cluster whose nodes record their logs: few
// partitions, ReplicaCount replicas (0: the cluster's), short network timeouts, and a short
// JoinTimeout so that a node the others refuse gives up quickly.
func secure(replicas int) cluster.Options {
	return cluster.Options{Partitions: 4, RecordLogs: true, Mutate: func(_ int, o *gridkv.GridKVOptions) {
		o.ReplicaCount = replicas
		o.Timings.JoinTimeout = 3 * time.Second
		o.Network = &transport.NetworkOptions{ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	}}
}

// secReadWrite writes through the first node and reads through the last.
func secReadWrite(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for i := range 8 {
		key := fmt.Sprintf("k%d", i)
		if err := c.Node(0).KV.Set(ctx, key, []byte("v"+key)); err != nil {
			t.Fatalf("Set %s: %v", key, err)
		}
		got, err := c.Live()[len(c.Live())-1].KV.Get(ctx, key)
		if err != nil || string(got) != "v"+key {
			t.Fatalf("Get %s = %q, %v", key, got, err)
		}
	}
}

func TestSecurityClusterKeyLength(t *testing.T) {
	o := secure(0)
	o.ClusterKey = []byte("short")
	_, err := cluster.Start(t, 0, o).AddAt(t, "bad-key", "", nil)
	if err == nil || !strings.Contains(err.Error(), "ClusterKey") || !strings.Contains(err.Error(), "5 bytes") {
		t.Fatalf("NewGridKV with a 5-byte key: %v; want an error naming ClusterKey and its length", err)
	}
}

func TestSecurityClusterKey(t *testing.T) {
	o := secure(3)
	o.ClusterKey = bytes.Repeat([]byte("k"), 32)
	c := cluster.Start(t, 3, o)
	secReadWrite(t, c)

	// A node with another key cannot join, and the seed it tried says so.
	o = secure(0)
	o.ClusterKey = bytes.Repeat([]byte("x"), 32)
	if _, err := cluster.Start(t, 0, o).AddAt(t, "intruder", "", []string{c.Node(0).Addr}); err == nil {
		t.Fatal("a node with the wrong ClusterKey joined")
	}
	if !c.Node(0).Log.Contains("failed authentication") {
		t.Fatal("the seed did not log the refused connection")
	}

	// A raw transport with a wrong key, or none, cannot get a request served.
	for _, k := range [][]byte{bytes.Repeat([]byte("x"), 16), nil} {
		tr, err := transport.Listen(transport.NetworkOptions{ClusterKey: k, ReadTimeout: time.Second}, "127.0.0.1:0", nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err = tr.Call(ctx, c.Node(1).Addr, 1, []byte{0})
		cancel()
		_ = tr.Close()
		if err == nil {
			t.Fatalf("a Call with key %q was served", k)
		}
	}
	// The cluster is unharmed.
	secReadWrite(t, c)
}

func TestSecurityWarnsWithoutKey(t *testing.T) {
	o := secure(1)
	o.Partitions = 1
	mutate := o.Mutate
	o.Mutate = func(i int, o *gridkv.GridKVOptions) {
		mutate(i, o)
		_, port, _ := net.SplitHostPort(o.LocalAddress)
		o.Network.BindAddr = net.JoinHostPort("0.0.0.0", port)
	}
	c := cluster.Start(t, 0, o)
	node, err := c.AddAt(t, "exposed", "", nil)
	if err != nil {
		t.Skipf("cannot bind the wildcard address here: %v", err)
	}
	c.Stop(0)
	if !node.Log.Contains("without a ClusterKey") {
		t.Fatal("no warning for a node exposed without a ClusterKey")
	}
}

// secPKI is a test certificate authority.
type secPKI struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newSecPKI(t *testing.T, name string) *secPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &secPKI{cert: cert, key: key, pool: pool}
}

// issue returns a certificate for 127.0.0.1, good for both server and client use.
func (p *secPKI) issue(t *testing.T, name string, serial int64) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// secTLSConfig is a node's mutual-TLS config: its certificate, and trust in ca only.
func secTLSConfig(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca,
		ClientCAs:    ca,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

func TestSecurityTLS(t *testing.T) {
	ca := newSecPKI(t, "gridkv test CA")
	serial := int64(10)
	o := secure(2)
	o.TLS = func(id string) *tls.Config {
		serial++
		return secTLSConfig(ca.issue(t, id, serial), ca.pool)
	}
	c := cluster.Start(t, 2, o)
	secReadWrite(t, c)

	// A node whose certificate another CA signed cannot join, even though it trusts the
	// cluster's CA.
	rogueCA := newSecPKI(t, "rogue CA")
	o = secure(0)
	o.TLS = func(string) *tls.Config { return secTLSConfig(rogueCA.issue(t, "rogue", 99), ca.pool) }
	if _, err := cluster.Start(t, 0, o).AddAt(t, "rogue", "", []string{c.Node(0).Addr}); err == nil {
		t.Fatal("a node with a certificate from another CA joined")
	}
	if !c.Node(0).Log.Contains("failed authentication") {
		t.Fatal("the seed did not log the refused TLS connection")
	}
	secReadWrite(t, c)
}
