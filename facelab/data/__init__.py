"""SynthFaces photo collections and benchmark suites.

>>> from facelab.data import SUITES
>>> SUITES
('webface', 'lp', 'collections', 'micc', 'bu3dfe', 'lfw')
"""

from facelab.data.cache import SavedCollection, save_collection
from facelab.data.image_folder import ImageFolderIdentities, export_image_folder
from facelab.data.lfw_folder import LFWFolder, StoredSuite, export_lfw
from facelab.data.lp300w import LP300W, export_lp300w
from facelab.data.micc_folder import MICCVideos, export_micc
from facelab.data.suites import (
    BU3DFE_EXPRESSIONS, BU3DFE_YAWS_DEG, MICC_CONDITIONS, SUITES, Conditions, ImageTable, SuiteConfig, build_table,
)
from facelab.data.synth import BatchStream, PhotoCollection, make_suite

__all__ = [
    "SUITES", "MICC_CONDITIONS", "BU3DFE_EXPRESSIONS", "BU3DFE_YAWS_DEG", "Conditions", "SuiteConfig", "ImageTable",
    "build_table", "PhotoCollection", "BatchStream", "make_suite", "save_collection", "SavedCollection",
    "LP300W", "export_lp300w",
    "export_lfw", "LFWFolder", "StoredSuite", "ImageFolderIdentities", "export_image_folder",
    "MICCVideos", "export_micc",
]
