"""The real images behind the sample: where each lives, how to display it, where its ROIs are.

Each entry is a fact about one file shipped inside a PyPI package (checked by eye on a
contact sheet); everything else in the sample (augmentation, boxes, captions) derives from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Box = tuple[int, int, int, int]
Loader = Literal["dicom", "picture", "radiomics"]
BlobScore = Literal["bright", "dark", "dab", "haematoxylin"]

RADIOMICS_VERSION = "3.0.1"
RADIOMICS_SDIST = f"pyradiomics-{RADIOMICS_VERSION}.tar.gz"
RADIOMICS_SHA256 = "47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5"


@dataclass(frozen=True)
class Blob:
    """An ROI found by image analysis: the smoothed `score` map's brightest connected region,
    searched for inside `within` (full-image pixels) when given."""

    score: BlobScore
    top_percent: float = 2.0
    sigma: float = 6.0
    within: Box | None = None


@dataclass(frozen=True)
class LabelMask:
    """An ROI taken from the lesion segmentation that ships with the image."""

    pad: float = 0.2


@dataclass(frozen=True)
class Finding:
    """Caption vocabulary for one ROI; each tuple holds interchangeable phrasings."""

    appearance: tuple[str, ...]
    neighbours: tuple[str, ...]
    hypotheses: tuple[str, ...]


@dataclass(frozen=True)
class Roi:
    """Where one ROI is (fixed box, blob rule or lesion mask) and how captions describe it."""

    where: Box | Blob | LabelMask
    finding: Finding


@dataclass(frozen=True)
class SourceSpec:
    """One real image file and everything needed to display and describe it.

    `resource` is the file name for pydicom's get_testdata_file ("dicom"), `module/path` inside
    an installed package ("picture"), or the member path in the pyradiomics sdist ("radiomics").
    `window` is a CT window (centre, width) in HU; without it grey images are clipped to
    `percentiles`. `stretch` rescales a dim colour image by its luminance percentiles.
    `crop` and `rois` boxes are in the displayed full image's pixels; `frames` are the
    frame / slice indices used; `flips` lists the flips ("h", "v") that keep the image plausible.
    `study` and `context` are interchangeable caption phrasings naming modality and organ.
    """

    key: str
    package: str
    resource: str
    loader: Loader
    modality: str
    organ: str
    study: tuple[str, ...]
    context: tuple[str, ...]
    licence: str
    origin: str
    rois: tuple[Roi, ...]
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (1.0, 99.5)
    stretch: bool = False
    crop: Box | None = None
    frames: tuple[int, ...] = (0,)
    flips: str = "h"



PYDICOM = "MIT (pydicom licence; test file listed in pydicom/data/test_files/README.txt)"
PYDICOM_DATA = "MIT (pydicom-data licence)"
RADIOMICS = "BSD-3-Clause (pyradiomics licence, Harvard Medical School)"

_HEAD_CT = ("a non-contrast axial computed tomography (CT) scan of the brain",
            "an axial non-contrasted CT image of the brain")
_LUNG_CT = ("an axial computed tomography (CT) scan of the chest in a lung window, centred on the lung",
            "a chest CT image in a lung window showing the lung parenchyma")
_BRAIN_MR = ("an axial contrast-enhanced T1-weighted magnetic resonance (MR) image of the brain",
             "an axial post-contrast T1-weighted MRI scan of the brain")
_BRAIN_MR_LESION = Finding(
    appearance=("a small focus of increased signal intensity with nodular enhancement",
                "a well-circumscribed enhancing lesion that is hyperintense to the surrounding cortex"),
    neighbours=("in the peripheral cortex and subcortical white matter near the convexity",
                "close to the inner table of the skull, at the grey-white matter junction"),
    hypotheses=("a cerebral metastasis, a small primary glioma or an inflammatory lesion",
                "an enhancing tumour focus; an abscess or demyelinating plaque is less likely"))

SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec(
        key="pydicom-data/693_UNCR", package="pydicom-data", resource="693_UNCR.dcm", loader="dicom",
        modality="CT", organ="brain", study=_HEAD_CT, licence=PYDICOM_DATA,
        origin="axial head CT slice (pydicom issue #693 regression file), 512x512, HU via RescaleSlope/Intercept",
        context=("showing both cerebral hemispheres within the skull vault",
                 "at the level of the lateral ventricles with the falx in view"),
        window=(40, 100),
        rois=(
            Roi((290, 128, 392, 300), Finding(
                appearance=("an extra-axial collection of low density with a crescentic shape",
                            "a hypodense crescentic area along the convexity with internal septation"),
                neighbours=("along the inner table of the skull, compressing the adjacent cerebral cortex",
                            "next to the frontoparietal convexity, with effacement of the neighbouring sulci"),
                hypotheses=("a chronic subdural haematoma exerting mass effect with shift of the midline",
                            "a subdural hygroma or chronic subdural collection compressing the hemisphere"))),
            Roi((150, 160, 208, 330), Finding(
                appearance=("a thin band of low density along the opposite convexity",
                            "a slender hypodense extra-axial rim"),
                neighbours=("between the skull and the cortical surface of the other hemisphere",
                            "along the contralateral frontoparietal convexity"),
                hypotheses=("a smaller contralateral subdural collection",
                            "prominent extra-axial cerebrospinal fluid spaces from atrophy"))),
        )),
    SourceSpec(
        key="pydicom/J2K_pixelrep_mismatch", package="pydicom", resource="J2K_pixelrep_mismatch.dcm",
        loader="dicom", modality="CT", organ="brain", licence=PYDICOM,
        origin="axial head CT slice at the skull base (pydicom issue #1149, JPEG 2000), 512x512, HU via "
               "RescaleSlope/Intercept",
        study=("a non-contrast axial computed tomography (CT) scan of the brain at the posterior fossa",
               "an axial non-contrasted CT image of the brain through the skull base"),
        context=("including the temporal lobes, the pons and the cerebellar hemispheres",
                 "with the orbits, the petrous bones and the posterior fossa in view"),
        window=(40, 100),
        rois=(
            Roi((215, 285, 300, 362), Finding(
                appearance=("a region of subtly reduced density around the fourth ventricle",
                            "an ill-defined hypodense area in the midline posterior fossa"),
                neighbours=("between the cerebellar hemispheres, posterior to the pons",
                            "in the vermis, abutting the fourth ventricle"),
                hypotheses=("early ischaemic change or oedema in the posterior fossa",
                            "a small posterior fossa lesion with mild mass effect on the fourth ventricle"))),
            Roi((300, 160, 385, 248), Finding(
                appearance=("an area of slightly heterogeneous density in the temporal lobe",
                            "a subtle patch of mixed attenuation within the temporal lobe"),
                neighbours=("anterior to the petrous temporal bone and lateral to the suprasellar cistern",
                            "in the middle cranial fossa next to the sphenoid wing"),
                hypotheses=("a cortical contusion or an early infarct of the temporal lobe",
                            "partial-volume artefact from the skull base versus a small contusion"))),
        )),
    SourceSpec(
        key="pydicom-data/explicit_VR-UN", package="pydicom-data", resource="explicit_VR-UN.dcm",
        loader="dicom", modality="CT", organ="abdomen", licence=PYDICOM_DATA,
        origin="contrast-enhanced axial abdominal CT (study 'Pancreas'; pydicom issue #968, originally from The "
               "Cancer Imaging Archive; JPEG 2000), 512x512, flipped to radiological orientation from "
               "ImageOrientationPatient",
        study=("a contrast-enhanced axial computed tomography (CT) scan of the abdomen",
               "an axial CT image of the upper abdomen in the portal venous phase"),
        context=("at the level of the pancreas, the liver and both kidneys",
                 "showing the pancreas, the aorta and the renal hila"),
        window=(40, 400),
        flips="", rois=(
            Roi((262, 212, 352, 262), Finding(
                appearance=("a soft-tissue density region of the pancreatic body with heterogeneous enhancement",
                            "a slightly hypoattenuating area in the body and tail of the pancreas"),
                neighbours=("anterior to the splenic vein and the left kidney, behind the stomach",
                            "close to the superior mesenteric vessels and the splenic vein"),
                hypotheses=("a pancreatic mass such as a ductal adenocarcinoma or focal pancreatitis",
                            "a pancreatic neoplasm; an inflammatory mass is a differential"))),
            Roi((293, 278, 352, 344), Finding(
                appearance=("an enhancing renal parenchyma with a well-defined cortex",
                            "a kidney with corticomedullary differentiation and no perirenal fluid"),
                neighbours=("lateral to the psoas muscle and posterior to the bowel loops",
                            "beside the spine, below the pancreatic tail"),
                hypotheses=("a small cortical renal lesion to be compared with prior imaging",
                            "a normal enhancing kidney; a small renal cyst cannot be excluded"))),
        )),
    SourceSpec(
        key="pydicom/CT_small", package="pydicom", resource="CT_small.dcm", loader="dicom",
        modality="CT", organ="spine", licence=PYDICOM,
        origin="axial CT of a vertebra, downsized to 128x128 from NEMA WG04 CT1_UNC",
        study=("an axial computed tomography (CT) image of the thoracic spine in a bone window",
               "a bone-window axial CT scan of the spine"),
        context=("showing a vertebral body, the spinal canal and the posterior elements",
                 "centred on a single vertebra with its pedicles and laminae"),
        window=(400, 1800),
        rois=(
            Roi((30, 4, 74, 31), Finding(
                appearance=("a vertebral body with mixed sclerotic and lucent trabecular density",
                            "a heterogeneous bony density within the vertebral body"),
                neighbours=("anterior to the spinal canal, flanked by the paravertebral soft tissues",
                            "in front of the pedicles and the neural canal"),
                hypotheses=("degenerative sclerosis or a vertebral haemangioma",
                            "an osseous metastasis; a bone island is a benign alternative"))),
            Roi((41, 37, 63, 57), Finding(
                appearance=("the spinal canal with homogeneous low-density contents",
                            "a rounded low-density canal without calcification"),
                neighbours=("bounded by the pedicles and laminae behind the vertebral body",
                            "between the vertebral body and the posterior arch"),
                hypotheses=("spinal canal narrowing from degenerative disease",
                            "a normal canal calibre; an epidural lesion would need MRI"))),
        )),
    SourceSpec(
        key="pyradiomics/lung1", package="pyradiomics", resource="pyradiomics-3.0.1/data/lung1_image.nrrd",
        loader="radiomics", modality="CT", organ="lung", study=_LUNG_CT, licence=RADIOMICS,
        origin="chest CT volume lung1 (512x512x48) with its lesion label map; slices through the lesion",
        context=("showing both lungs, the trachea and the upper mediastinum",
                 "at the level of the lung apices and the great vessels"),
        window=(-600, 1500), frames=(32, 33, 34),
        flips="", rois=(Roi(LabelMask(pad=0.35), Finding(
            appearance=("a small solid nodule of soft-tissue density with slightly irregular margins",
                        "a rounded soft-tissue attenuation nodule within aerated lung"),
            neighbours=("within the lung parenchyma, next to the bronchovascular bundle near the mediastinum",
                        "in the upper lobe close to the paratracheal region"),
            hypotheses=("a primary lung carcinoma, a granuloma or a solitary metastasis",
                        "an early bronchogenic carcinoma; an inflammatory nodule is a differential"))),)),
    SourceSpec(
        key="pyradiomics/lung2", package="pyradiomics", resource="pyradiomics-3.0.1/data/lung2_image.nrrd",
        loader="radiomics", modality="CT", organ="lung", study=_LUNG_CT, licence=RADIOMICS,
        origin="chest CT volume lung2 (512x512x61) with its lesion label map; slices through the lesion",
        context=("showing both lungs, the heart and the descending aorta",
                 "at the level of the heart and the lower lobes"),
        window=(-600, 1500), frames=tuple(range(15, 26)),
        flips="", rois=(Roi(LabelMask(pad=0.2), Finding(
            appearance=("a rounded mass of soft-tissue density with lobulated margins",
                        "a well-defined soft-tissue attenuation mass in the lower lobe"),
            neighbours=("in the posterior lower lobe, abutting the pleura near the spine",
                        "adjacent to the descending aorta and the posterior chest wall"),
            hypotheses=("a primary lung cancer or a pulmonary metastasis",
                        "a malignant pulmonary mass; a round pneumonia is less likely"))),)),
    SourceSpec(
        key="pydicom-data/MR2_UNCR", package="pydicom-data", resource="MR2_UNCR.dcm", loader="dicom",
        modality="MR", organ="shoulder", licence=PYDICOM_DATA,
        origin="coronal oblique shoulder MR from NEMA WG04 (MR2), 1024x1024",
        study=("a coronal oblique magnetic resonance (MR) image of the shoulder",
               "a coronal MRI scan of the shoulder joint"),
        context=("showing the humeral head, the glenoid and the acromion",
                 "with the rotator cuff, the acromioclavicular joint and the deltoid in view"),
        crop=(60, 120, 1000, 960),
        rois=(
            Roi((330, 288, 590, 385), Finding(
                appearance=("a region of intermediate signal intensity within the supraspinatus tendon",
                            "an area of heterogeneous signal in the rotator cuff"),
                neighbours=("beneath the acromion and above the humeral head",
                            "in the subacromial space next to the greater tuberosity"),
                hypotheses=("supraspinatus tendinopathy or a partial-thickness rotator cuff tear",
                            "subacromial impingement with tendon degeneration"))),
            Roi((300, 415, 570, 630), Finding(
                appearance=("a humeral head with high, slightly heterogeneous marrow signal",
                            "a rounded bony structure of bright marrow signal"),
                neighbours=("articulating with the glenoid and covered by the rotator cuff",
                            "lateral to the glenohumeral joint space"),
                hypotheses=("bone marrow oedema or a bone bruise",
                            "normal fatty marrow; a marrow-replacing lesion is unlikely"))),
        )),
    SourceSpec(
        key="pydicom-data/MR-SIEMENS-DICOM-WithOverlays", package="pydicom-data",
        resource="MR-SIEMENS-DICOM-WithOverlays.dcm", loader="dicom", modality="MR", organ="liver",
        licence=PYDICOM_DATA,
        origin="axial T1 VIBE fat-saturated dynamic abdominal MR (study 'abdomen^liver', series 'marked lesion'), "
               "484x484, a GDCM sample; the first ROI is the lesion marked in the file's overlay plane",
        study=("an axial contrast-enhanced T1-weighted magnetic resonance (MR) image of the liver",
               "an axial fat-suppressed post-contrast MRI scan of the upper abdomen and liver"),
        context=("at the level of the liver, the pancreas and both kidneys",
                 "showing the liver, the spleen and the renal cortices"),
        flips="", rois=(
            Roi((43, 236, 84, 277), Finding(
                appearance=("a small hyperintense enhancing focus in the liver",
                            "a round bright nodule with avid enhancement"),
                neighbours=("near the lateral liver capsule of the right lobe",
                            "in the peripheral right hepatic lobe, away from the hilum"),
                hypotheses=("a small haemangioma or a hypervascular metastasis",
                            "a hypervascular liver lesion such as a focal nodular hyperplasia or metastasis"))),
            Roi((104, 188, 172, 260), Finding(
                appearance=("a rounded lesion with a hypointense centre and an enhancing rim",
                            "a ring-enhancing mass with low central signal"),
                neighbours=("in the right hepatic lobe next to the portal structures",
                            "adjacent to the gallbladder fossa and the hepatic hilum"),
                hypotheses=("a liver metastasis with central necrosis or a hepatic abscess",
                            "a necrotic hepatic tumour; an abscess is a differential"))),
        )),
    SourceSpec(
        key="pyradiomics/brain1", package="pyradiomics", resource="pyradiomics-3.0.1/data/brain1_image.nrrd",
        loader="radiomics", modality="MR", organ="brain", study=_BRAIN_MR, licence=RADIOMICS,
        origin="brain MR volume brain1 (256x256x25) with its lesion label map; slices through the lesion",
        context=("showing the lateral ventricles and both cerebral hemispheres",
                 "at the level of the basal ganglia and the ventricles"),
        frames=tuple(range(11, 18)), rois=(Roi(LabelMask(pad=0.3), _BRAIN_MR_LESION),)),
    SourceSpec(
        key="pyradiomics/brain2", package="pyradiomics", resource="pyradiomics-3.0.1/data/brain2_image.nrrd",
        loader="radiomics", modality="MR", organ="brain", study=_BRAIN_MR, licence=RADIOMICS,
        origin="brain MR volume brain2 (256x256x23) with its lesion label map; slices through the lesion",
        context=("showing the cerebral hemispheres above the orbits",
                 "at the level of the third ventricle and the occipital lobes"),
        frames=(8, 9, 10), rois=(Roi(LabelMask(pad=0.3), _BRAIN_MR_LESION),)),
    SourceSpec(
        key="pydicom-data/RG1_UNCR", package="pydicom-data", resource="RG1_UNCR.dcm", loader="dicom",
        modality="X-ray", organ="chest", licence=PYDICOM_DATA,
        origin="frontal chest computed radiograph from NEMA WG04 (RG1), MONOCHROME1, 1841x1955",
        study=("a frontal chest X-ray (radiograph) of the chest",
               "a posteroanterior chest radiograph of the chest"),
        context=("showing both lungs, the heart and the diaphragm",
                 "with the mediastinum, the ribs and both hemidiaphragms in view"),
        percentiles=(0.5, 95.0), crop=(60, 40, 1800, 1900),
        flips="", rois=(
            Roi((330, 1040, 640, 1320), Finding(
                appearance=("multiple rounded nodular opacities of increased density",
                            "clustered soft-tissue nodules that are more opaque than the lung"),
                neighbours=("in the lower zone of the lung above the hemidiaphragm",
                            "in the lower lung zone near the cardiophrenic angle"),
                hypotheses=("pulmonary metastases or multifocal infection",
                            "multiple lung nodules such as metastatic disease or granulomas"))),
            Roi((1140, 630, 1420, 820), Finding(
                appearance=("a rounded soft-tissue opacity with well-defined margins",
                            "a round nodular opacity overlying the ribs"),
                neighbours=("in the mid zone of the lung lateral to the hilum",
                            "projected over the mid lung zone beside the hilar vessels"),
                hypotheses=("a pulmonary nodule such as a metastasis",
                            "a further metastatic deposit or a granuloma"))),
        )),
    SourceSpec(
        key="pydicom-data/RG3_UNCR", package="pydicom-data", resource="RG3_UNCR.dcm", loader="dicom",
        modality="X-ray", organ="tibia", licence=PYDICOM_DATA,
        origin="radiograph of the distal lower leg from NEMA WG04 (RG3; study 'Non-ossifying fibroma of "
               "distal tibia'), MONOCHROME1, 1760x1760, cropped to the leg",
        study=("a frontal X-ray (radiograph) of the lower leg including the distal tibia",
               "an anteroposterior radiograph of the distal tibia and ankle"),
        context=("showing the tibia, the fibula and the ankle joint",
                 "with the distal tibial shaft, the fibula and the talus in view"),
        crop=(400, 640, 1240, 1760), flips="",
        rois=(Roi((770, 950, 925, 1210), Finding(
            appearance=("a well-defined, lobulated lucent lesion with a thin sclerotic margin",
                        "an eccentric bubbly area of reduced bone density with sclerotic borders"),
            neighbours=("in the distal tibial metaphysis, abutting the cortex above the ankle joint",
                        "in the metaphysis of the distal tibia, near the physeal scar"),
            hypotheses=("a non-ossifying fibroma (fibrous cortical defect)",
                        "a benign fibrous bone lesion such as a non-ossifying fibroma"))),)),
    SourceSpec(
        key="pydicom-data/US1_UNCR", package="pydicom-data", resource="US1_UNCR.dcm", loader="dicom",
        modality="ultrasound", organ="lymph node", licence=PYDICOM_DATA,
        origin="power Doppler ultrasound of a lymph node from NEMA WG04 (US1), RGB 640x480",
        study=("a power Doppler ultrasound image of a superficial lymph node",
               "a colour power Doppler sonographic image of a lymph node"),
        context=("in a longitudinal view with colour flow mapping",
                 "showing the node, the overlying soft tissue and the flow signal"),
        flips="", rois=(
            Roi((95, 160, 305, 285), Finding(
                appearance=("an oval hypoechoic node with prominent hilar and peripheral vascularity",
                            "a hypoechoic oval structure with increased power Doppler flow"),
                neighbours=("within the subcutaneous soft tissue deep to the skin and fascia",
                            "beneath the superficial fascia, next to a second node"),
                hypotheses=("reactive lymphadenopathy",
                            "lymphoma or metastatic involvement given the peripheral flow"))),
            Roi((325, 150, 545, 268), Finding(
                appearance=("a second hypoechoic node with branching internal vascularity",
                            "an adjacent oval node with hilar flow signal"),
                neighbours=("immediately next to the first node in the same fascial plane",
                            "in the same subcutaneous layer beside the first node"),
                hypotheses=("a cluster of reactive nodes",
                            "multiple enlarged nodes of a lymphoproliferative process"))),
        )),
    SourceSpec(
        key="pydicom-data/gdcm-US-ALOKA-16", package="pydicom-data", resource="gdcm-US-ALOKA-16.dcm",
        loader="dicom", modality="ultrasound", organ="pelvis", licence=PYDICOM_DATA,
        origin="dual-panel B-mode pelvic ultrasound (GDCM sample, ALOKA), palette colour 640x480",
        study=("a transabdominal B-mode ultrasound image of the pelvis",
               "a grey-scale sonographic image of the pelvis in a dual-panel display"),
        context=("showing the fluid-filled bladder and the structures behind it",
                 "with two adjacent views of the lower pelvis"),
        flips="", rois=(
            Roi((95, 212, 235, 332), Finding(
                appearance=("a hypoechoic, ill-defined area with heterogeneous internal echoes",
                            "a region of mixed echogenicity with posterior acoustic enhancement"),
                neighbours=("posterior to the fluid-filled urinary bladder",
                            "deep to the bladder wall in the lower pelvis"),
                hypotheses=("a uterine or adnexal mass such as a fibroid",
                            "a complex adnexal cyst or a pelvic mass"))),
            Roi((400, 218, 560, 330), Finding(
                appearance=("a similar hypoechoic region on the second view",
                            "a heterogeneous hypoechoic area on the adjacent view"),
                neighbours=("behind the bladder on the adjacent panel",
                            "in the same pelvic location on the second panel"),
                hypotheses=("the same pelvic lesion seen in another plane",
                            "a pelvic mass confirmed on the orthogonal view"))),
        )),
    SourceSpec(
        key="pydicom-data/color3d_jpeg_baseline", package="pydicom-data", resource="color3d_jpeg_baseline.dcm",
        loader="dicom", modality="ultrasound", organ="heart", licence=PYDICOM_DATA,
        origin="transthoracic echocardiography cine loop (SonoSite, 120 frames, 640x480); 12 frames used",
        study=("a transthoracic echocardiography (ultrasound) image of the heart",
               "an echocardiographic ultrasound image of the heart in an apical view"),
        context=("in an apical four-chamber view",
                 "showing the ventricles, the atria and the atrioventricular valves"),
        stretch=True, crop=(110, 20, 570, 430), frames=tuple(range(0, 120, 10)), flips="",
        rois=(
            Roi((305, 95, 405, 250), Finding(
                appearance=("the left ventricular cavity with heterogeneous echogenicity of the myocardium",
                            "a dilated, echo-poor ventricular cavity with a thin wall"),
                neighbours=("adjacent to the interventricular septum, above the mitral valve plane",
                            "beside the septum, towards the cardiac apex"),
                hypotheses=("left ventricular dilatation or a regional wall-motion abnormality",
                            "a dilated cardiomyopathy"))),
            Roi((290, 262, 400, 335), Finding(
                appearance=("an enlarged echo-free atrial chamber",
                            "an anechoic atrial cavity"),
                neighbours=("below the mitral valve, behind the left ventricle",
                            "at the base of the heart next to the interatrial septum"),
                hypotheses=("left atrial enlargement from mitral valve disease",
                            "atrial dilatation secondary to raised filling pressures"))),
        )),
    SourceSpec(
        key="scikit-image/ihc", package="scikit-image", resource="skimage/data/ihc.png", loader="picture",
        modality="pathology", organ="colon", flips="hv",
        licence="scikit-image BSD-3-Clause package; image 'No known copyright restrictions' (skimage.data)",
        origin="IHC micrograph of colonic glands (FHL2 protein revealed with DAB, haematoxylin counterstain; "
               "CMMI), 512x512 RGB",
        study=("an immunohistochemistry (IHC) stained histopathology image of the colon",
               "a histopathological section of the colon with immunohistochemical staining"),
        context=("with brown DAB chromogen and blue haematoxylin counterstain",
                 "showing colonic glands in a loose fibrous stroma"),
        rois=(Roi(Blob("dab", top_percent=6.0, sigma=18.0), Finding(
            appearance=("a gland with strong brown membranous and cytoplasmic DAB staining",
                        "densely packed epithelial cells with intense brown immunoreactivity"),
            neighbours=("surrounded by pale blue stroma with scattered spindle-shaped nuclei",
                        "next to the loose stroma between adjacent glands"),
            hypotheses=("protein overexpression in the glandular epithelium of a colorectal adenoma or "
                        "adenocarcinoma",
                        "an epithelial neoplasm with aberrant protein expression"))),)),
    SourceSpec(
        key="wsidicom-data/test_tile", package="wsidicom-data", resource="wsidicom_data/data/test_tile.png",
        loader="picture", modality="pathology", organ="epithelium", flips="hv",
        licence="Apache-2.0 (wsidicom-data licence)",
        origin="tile of a whole-slide image stained with haematoxylin and eosin (H&E), 240x240 RGB",
        study=("a haematoxylin and eosin (H&E) stained histopathology image of epithelium",
               "an H&E histological section showing epithelium"),
        context=("over loose fibrous connective tissue",
                 "with a stratified epithelium and the underlying stroma"),
        rois=(Roi(Blob("haematoxylin", top_percent=8.0, sigma=8.0), Finding(
            appearance=("a densely cellular epithelial area with hyperchromatic nuclei",
                        "crowded basophilic nuclei with a dark purple haematoxylin stain"),
            neighbours=("bordering the underlying eosinophilic collagen bundles",
                        "at the interface between the epithelium and the pink stroma"),
            hypotheses=("epithelial hyperplasia or dysplasia",
                        "a reactive or dysplastic epithelial change"))),)),
    SourceSpec(
        key="scikit-image/retina", package="scikit-image", resource="skimage/data/retina.jpg", loader="picture",
        modality="fundus", organ="retina", flips="",
        licence="CC0 1.0 (Häggström, 'Fundus photograph of normal left eye', via scikit-image)",
        origin="colour fundus photograph of a normal left eye, 1411x1411 RGB",
        study=("a colour fundus photograph of the retina",
               "a fundus (retinal) photograph of the left eye showing the retina"),
        context=("showing the optic disc, the macula and the vascular arcades",
                 "with the retinal vessels radiating from the optic disc"),
        rois=(
            Roi(Blob("bright", top_percent=1.5, sigma=20.0), Finding(
                appearance=("the optic disc, a bright yellowish round area with a sharp margin",
                            "a pale, well-demarcated disc with a central cup"),
                neighbours=("at the nasal side where the retinal vessels converge",
                            "at the origin of the superior and inferior vascular arcades"),
                hypotheses=("a normal optic nerve head; glaucomatous cupping should be excluded",
                            "a physiological cup; papilloedema is not suggested"))),
            Roi(Blob("dark", top_percent=4.0, sigma=30.0, within=(450, 450, 950, 950)), Finding(
                appearance=("a darker, avascular macular area with even pigmentation",
                            "a dark reddish fovea without exudates or haemorrhage"),
                neighbours=("temporal to the optic disc, encircled by the vascular arcades",
                            "in the centre of the posterior pole"),
                hypotheses=("a normal fovea; early age-related macular degeneration cannot be excluded",
                            "a healthy macula; subtle macular oedema would need OCT"))),
        )),
)
