"""Reference timings for bench/proposals-speed.ts (densepipe issue #5).

Writes the bench images into OUT_DIR (scikit-image sample photos at ~500 px, plus a 128x128 squash
of each for the DETReg setting) and prints JSON with the median CPU time per image of:
OpenCV ximgproc selective search (fast mode), skimage felzenszwalb and skimage slic,
all single-threaded (cv2.setNumThreads(1); time.process_time), and for slic the SHA-256 of the
label map as little-endian int32 (the bench checks that ours is identical).

usage: python proposals-reference.py OUT_DIR REPEATS
"""
import hashlib
import json
import os
import statistics
import sys
import time

import cv2
import numpy as np
import skimage
import skimage.data
from skimage.segmentation import felzenszwalb, slic

cv2.setNumThreads(1)


def cpu_ms(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.process_time()
        out = fn()
        times.append((time.process_time() - t) * 1000)
    return statistics.median(times), out


def main():
    out_dir, repeats = sys.argv[1], int(sys.argv[2])
    os.makedirs(out_dir, exist_ok=True)
    photos = {
        'astronaut-512x512': skimage.data.astronaut(),
        'coffee-500x333': cv2.resize(skimage.data.coffee(), (500, 333), interpolation=cv2.INTER_AREA),
        'chelsea-451x300': skimage.data.chelsea(),
    }
    for name, rgb in list(photos.items()):
        photos[name.split('-')[0] + '-128x128'] = cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_LINEAR)
    results = []
    for name, rgb in photos.items():
        cv2.imwrite(os.path.join(out_dir, name + '.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)

        def ss():
            s = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
            s.setBaseImage(bgr)
            s.switchToSelectiveSearchFast()
            return s.process()

        ms, boxes = cpu_ms(ss, repeats)
        results.append({'image': name, 'method': 'selective-search-fast', 'ms': ms, 'count': len(boxes)})
        if name.endswith('128x128'):
            continue
        ms, labels = cpu_ms(lambda: felzenszwalb(rgb, scale=100, sigma=0.8, min_size=20), repeats)
        results.append({'image': name, 'method': 'felzenszwalb', 'ms': ms, 'count': int(labels.max() + 1)})
        ms, labels = cpu_ms(lambda: slic(rgb, n_segments=100, start_label=0), repeats)
        sha = hashlib.sha256(np.ascontiguousarray(labels, dtype='<i4').tobytes()).hexdigest()
        results.append({'image': name, 'method': 'slic', 'ms': ms, 'count': int(labels.max() + 1), 'labelsSha256': sha})
    print(json.dumps({'versions': {'opencv': cv2.__version__, 'skimage': skimage.__version__, 'numpy': np.__version__}, 'results': results}))


if __name__ == '__main__':
    main()
