"""Data preparation: convert multi-modality datasets into normalized ``.npy`` slices + a manifest
(:func:`data_prep.prep.prep_dataset`), and PyTorch datasets reading them (:mod:`data_prep.dataset`).

Submodules are imported on use (``from data_prep.prep import prep_dataset``) so that importing the
package pulls in neither torch nor scipy.
"""
