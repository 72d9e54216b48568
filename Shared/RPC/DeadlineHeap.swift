/// A binary min-heap of (deadline, id) pairs: which timed thing is due next. Entries are
/// never removed early; whoever pops one checks whether its id still matters.
public struct DeadlineHeap: Sendable {
    public struct Entry: Sendable, Equatable {
        public var deadline: UInt64
        public var id: UInt64
    }

    private var items: [Entry] = []

    public init() {}

    public var count: Int { items.count }
    public var isEmpty: Bool { items.isEmpty }
    public var next: Entry? { items.first }

    public mutating func insert(deadline: UInt64, id: UInt64) {
        items.append(Entry(deadline: deadline, id: id))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i].deadline < items[parent].deadline else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    public mutating func popDue(now: UInt64) -> Entry? {
        guard let top = items.first, top.deadline <= now else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < items.count && items[l].deadline < items[m].deadline { m = l }
                if r < items.count && items[r].deadline < items[m].deadline { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }

    /// Drops the entries whose id no longer matters (e.g. answered calls) once they outnumber
    /// the `live` ones several times over, so that a heap fed faster than its deadlines come
    /// due stays small. Each sweep is O(n) but comes only every ~n inserts: O(1) amortised.
    public mutating func prune(live: Int, isLive: (UInt64) -> Bool) {
        guard items.count > 4 * live + 1_024 else { return }
        items.removeAll { !isLive($0.id) }
        items.sort { $0.deadline < $1.deadline }  // a sorted array is a valid min-heap
    }
}

/// A FIFO queue with O(1) amortized push and pop (an array with a moving head).
public struct FIFO<Element: Sendable>: Sendable {
    private var items: [Element] = []
    private var head = 0

    public init() {}

    public var count: Int { items.count - head }
    public var isEmpty: Bool { head == items.count }

    public mutating func append(_ e: Element) { items.append(e) }

    public mutating func popFirst() -> Element? {
        guard head < items.count else { return nil }
        let e = items[head]
        head += 1
        if head == items.count { items.removeAll(keepingCapacity: true); head = 0 }
        else if head > 1024 && head * 2 > items.count { items.removeFirst(head); head = 0 }
        return e
    }

    public var elements: ArraySlice<Element> { items[head...] }
}
