package membership

import "testing"

func TestClusterIDCarriesSettings(t *testing.T) {
	id := NewClusterSettingsID(64, 5)
	if p, n, ok := ClusterSettings(id); !ok || p != 64 || n != 5 {
		t.Fatalf("ClusterSettings(%q) = %d, %d, %v; want 64, 5", id, p, n, ok)
	}
	if NewClusterSettingsID(64, 5) == id {
		t.Fatal("two new cluster IDs are equal")
	}
	for _, id := range []string{
		"",
		"0123456789abcdef0123456789abcdef", // an earlier version's: no settings
		"x.p8",
		"x.p8.n",
		"x.8.3",
		"x.p0.n3",
		"x.p8.n0",
		"x.p99999.n3",
		"x.p-1.n3",
		"x.p8.n3.extra",
	} {
		if p, n, ok := ClusterSettings(id); ok {
			t.Errorf("ClusterSettings(%q) = %d, %d; want no settings", id, p, n)
		}
	}
}
