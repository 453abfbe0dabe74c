package watch

import "slices"

// prefixIndex finds the watchers whose prefix a key starts with, in as many map lookups as
// there are distinct prefix lengths among them, whatever their number.
type prefixIndex struct {
	byPrefix map[string][]*Watcher
	lengths  []int // distinct lengths of the prefixes in byPrefix, ascending
}

func (ix *prefixIndex) add(w *Watcher) {
	if ix.byPrefix == nil {
		ix.byPrefix = make(map[string][]*Watcher)
	}
	ws := ix.byPrefix[w.prefix]
	if len(ws) == 0 {
		if i, found := slices.BinarySearch(ix.lengths, len(w.prefix)); !found {
			ix.lengths = slices.Insert(ix.lengths, i, len(w.prefix))
		}
	}
	ix.byPrefix[w.prefix] = append(ws, w)
}

func (ix *prefixIndex) remove(w *Watcher) {
	ws := slices.DeleteFunc(ix.byPrefix[w.prefix], func(x *Watcher) bool { return x == w })
	if len(ws) > 0 {
		ix.byPrefix[w.prefix] = ws
		return
	}
	delete(ix.byPrefix, w.prefix)
	for p := range ix.byPrefix {
		if len(p) == len(w.prefix) {
			return // another prefix of that length remains
		}
	}
	if i, found := slices.BinarySearch(ix.lengths, len(w.prefix)); found {
		ix.lengths = slices.Delete(ix.lengths, i, i+1)
	}
}

// match calls fn for every watcher whose prefix key starts with.
func (ix *prefixIndex) match(key string, fn func(*Watcher)) {
	for _, n := range ix.lengths {
		if n > len(key) {
			return
		}
		for _, w := range ix.byPrefix[key[:n]] {
			fn(w)
		}
	}
}

// all calls fn for every watcher.
func (ix *prefixIndex) all(fn func(*Watcher)) {
	for _, ws := range ix.byPrefix {
		for _, w := range ws {
			fn(w)
		}
	}
}

func (ix *prefixIndex) empty() bool { return len(ix.byPrefix) == 0 }
