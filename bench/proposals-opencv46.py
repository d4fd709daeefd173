"""OpenCV 4.6 side of bench/proposals-opencv.ts (densepipe issue #18): selective search on real
photographs, boxes and CPU time, plus the Lab and INTER_LINEAR-resize bytes they start from.

Writes the bench images into OUT_DIR (scikit-image's astronaut 512x512, coffee at 500x333
(INTER_AREA, as bench/proposals-speed.ts uses it), chelsea 451x300), and prints JSON: per image
the SHA-256 of cv2.cvtColor(COLOR_BGR2Lab), of the DETReg input cv2.resize(rgb, (128, 128))
(INTER_LINEAR), and per case (image, mode) OpenCV's de-duplicated boxes (x, y, w, h) and the
median CPU ms over REPEATS runs, one thread (cv2.setNumThreads(1); time.process_time).
The 128x128 case is DETReg's call: the RGB array handed to OpenCV, which reads it as BGR.

Reference: Debian bookworm's python3-opencv 4.6.0 (contrib included) and python3-skimage 0.19.3
(for the photos): apt-get install python3-opencv python3-skimage; /usr/bin/python3 is used unless
DENSEPIPE_REFERENCE_PYTHON names another interpreter with cv2 4.6 + ximgproc and skimage.

usage: python3 proposals-opencv46.py OUT_DIR REPEATS [MODES]   (MODES: fast,quality)
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

cv2.setNumThreads(1)


def sha16(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def selective_search(bgr, mode, repeats):
    times, boxes = [], None
    for _ in range(repeats):
        s = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
        s.setBaseImage(bgr)
        s.switchToSelectiveSearchFast() if mode == 'fast' else s.switchToSelectiveSearchQuality()
        t = time.process_time()
        boxes = s.process()
        times.append((time.process_time() - t) * 1000)
    return statistics.median(times), np.asarray(boxes).reshape(-1, 4).tolist()


def main():
    out_dir, repeats = sys.argv[1], int(sys.argv[2])
    modes = sys.argv[3].split(',') if len(sys.argv) > 3 else ['fast', 'quality']
    os.makedirs(out_dir, exist_ok=True)
    photos = {
        'astronaut': skimage.data.astronaut(),
        'coffee': cv2.resize(skimage.data.coffee(), (500, 333), interpolation=cv2.INTER_AREA),
        'chelsea': skimage.data.chelsea(),
    }
    images, cases = {}, []
    for name, rgb in photos.items():
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        cv2.imwrite(os.path.join(out_dir, name + '.png'), bgr)
        small = cv2.resize(rgb, (128, 128), interpolation=cv2.INTER_LINEAR)
        images[name] = {'width': rgb.shape[1], 'height': rgb.shape[0], 'labSha256_16': sha16(cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab)),
                        'resize128Sha256_16': sha16(small)}
        for mode in modes:
            ms, boxes = selective_search(bgr, mode, repeats)
            cases.append({'image': name, 'mode': mode, 'detreg128': False, 'ms': ms, 'boxes': boxes})
        ms, boxes = selective_search(small, 'fast', repeats)
        cases.append({'image': name, 'mode': 'fast', 'detreg128': True, 'ms': ms, 'boxes': boxes})
    print(json.dumps({'versions': {'opencv': cv2.__version__, 'skimage': skimage.__version__, 'numpy': np.__version__}, 'images': images, 'cases': cases}))


if __name__ == '__main__':
    main()
