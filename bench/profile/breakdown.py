#!/usr/bin/env python3
"""Breaks a `perf script` dump down by where each sample's CPU time lands
(kernel, tokio, hyper, the allocator, agentmux, ...; self time of the leaf
frame) and, for each regex given, the share of samples whose stack
contains it (inclusive time). Used by bench/profile/http.sh.

    python3 bench/profile/breakdown.py perf.txt 'agentmux::edge::admit' 'tokio::time'
"""
import sys,re,collections
pats=sys.argv[2:]
tot=0;c=collections.Counter();leafk=collections.Counter()
block=[]
def kind(sym,dso):
    if '[kernel' in dso: return 'kernel'
    if 'libc' in dso: 
        if re.search('malloc|free|realloc|consolidate|unlink_chunk|tcache',sym): return 'libc-malloc'
        if 'mem' in sym: return 'libc-mem'
        return 'libc-other'
    if 'vdso' in dso: return 'vdso'
    for k in ['hyper_util','hyper','tokio_util','tokio','http_body','http::','bytes','hashbrown','tower','agentmux','prometheus','h2','mio','std','core','alloc','tracing','opentelemetry']:
        if k in sym: return k
    return 'other'
def handle(b):
    global tot
    fr=[l.strip() for l in b[1:] if l.strip()]
    if not fr: return
    tot+=1
    text='\n'.join(fr)
    for p in pats:
        if re.search(p,text): c[p]+=1
    m=re.match(r'\S+\s+(.*)\s+\((.*)\)$',fr[0])
    if m: leafk[kind(m.group(1),m.group(2))]+=1
for line in open(sys.argv[1],errors='replace'):
    if line.strip()=='' :
        handle(block);block=[]
    else: block.append(line)
handle(block)
print('samples',tot)
for k,v in leafk.most_common(): print(f'self {v/tot*100:5.1f}% {k}')
for p in pats: print(f'incl {c[p]/tot*100:5.1f}% {p}')
