"""Training, evaluation and prediction: what `python -m mrcnn_from_scratch` runs (chapters 09 and 10).

- train.py: the training loop; recipe.py: its defaults; data_order.py: the reproducible data order;
  checkpoint.py: RUN/last.pt; logbook.py: metrics.jsonl and loss.png; distributed.py: torchrun and DDP.
- evaluate.py: COCO AP with pycocotools.  predict.py: pictures of detections (see ../visualize.py).
- layout.py: the dataset folder layout; errors.py: the errors the command line reports plainly.
"""
