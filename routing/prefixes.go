package routing

import "sort"

// prefixes finds the longest of a set of path prefixes that a path starts
// with: a radix tree, whose edges are labelled with byte strings, so that a
// lookup compares each byte of the path at most once.
type prefixes struct {
	root node
}

type node struct {
	label    string  // the bytes on the edge into this node
	route    int32   // the route whose prefix ends here; -1: none
	firsts   []byte  // first byte of each child's label, sorted
	children []*node // in the order of firsts
}

func newPrefixes() *prefixes {
	return &prefixes{root: node{route: -1}}
}

// child returns the child whose label starts with c, or nil.
func (n *node) child(c byte) *node {
	i := sort.Search(len(n.firsts), func(i int) bool { return n.firsts[i] >= c })
	if i < len(n.firsts) && n.firsts[i] == c {
		return n.children[i]
	}
	return nil
}

// longest returns the route of the longest prefix of path, or -1.
func (ps *prefixes) longest(path []byte) int {
	n := &ps.root
	best := n.route
	for len(path) > 0 {
		c := n.child(path[0])
		if c == nil || len(path) < len(c.label) || string(path[:len(c.label)]) != c.label {
			break
		}
		path = path[len(c.label):]
		n = c
		if n.route >= 0 {
			best = n.route
		}
	}
	return int(best)
}

// insert adds prefix for route; a prefix inserted twice keeps the last
// route (config refuses duplicates before).
func (ps *prefixes) insert(prefix string, route int32) {
	n := &ps.root
	for {
		if prefix == "" {
			n.route = route
			return
		}
		c := n.child(prefix[0])
		if c == nil {
			n.add(&node{label: prefix, route: route})
			return
		}
		common := 0
		for common < len(c.label) && common < len(prefix) && c.label[common] == prefix[common] {
			common++
		}
		if common < len(c.label) {
			// Split c: a new node for the common part, c below it.
			mid := &node{label: c.label[:common], route: -1}
			c.label = c.label[common:]
			mid.add(c)
			n.replace(mid)
			c = mid
		}
		prefix = prefix[common:]
		n = c
	}
}

// add inserts child c, keeping firsts sorted.
func (n *node) add(c *node) {
	i := sort.Search(len(n.firsts), func(i int) bool { return n.firsts[i] >= c.label[0] })
	n.firsts = append(n.firsts, 0)
	copy(n.firsts[i+1:], n.firsts[i:])
	n.firsts[i] = c.label[0]
	n.children = append(n.children, nil)
	copy(n.children[i+1:], n.children[i:])
	n.children[i] = c
}

// replace puts c in place of the child with the same first byte.
func (n *node) replace(c *node) {
	i := sort.Search(len(n.firsts), func(i int) bool { return n.firsts[i] >= c.label[0] })
	n.children[i] = c
}
